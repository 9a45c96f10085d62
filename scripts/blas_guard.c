/*
 * Makes MLX's CPU matrix products take turns in a single-threaded OpenBLAS.
 *
 * scripts/setup-mlx.py compiles this file into .mlx/blas-guard/ and links it
 * into our binaries just ahead of the single-threaded OpenBLAS it links (see
 * that script's doc). Why: a single-threaded OpenBLAS built without locking
 * (Debian's libopenblas0-serial 0.3.21, as `openblas_get_config()` shows it)
 * gives every caller the same work buffers, so two threads multiplying at
 * once can get each other's partial sums. MLX runs each thread's CPU stream on
 * a worker of its own, so two threads using MLX (our parallel tests; a program
 * embedding the library in several threads) call cblas_sgemm concurrently:
 * measured, about one product in 2 000 of a (44x64)(64x256) shape came out
 * wrong (crates/core/tests/mlx_plumbing.rs,
 * concurrent_cpu_matrix_products_equal_one_threads).
 *
 * Each function here has the name and signature of the one libmlx.so calls,
 * takes one process-wide lock and calls the next definition in the lookup
 * order (OpenBLAS's). One thread's calls never wait; the lock is only
 * contended when threads multiply at the same moment, which a serial BLAS
 * could not run side by side safely anyway. MLX's LAPACK calls (its linalg
 * operations, which mlx-harmony does not use) are not wrapped.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_mutex_t blas_turn = PTHREAD_MUTEX_INITIALIZER;

/* The next definition of `name` after this library, or a clear failure:
 * without it the process would compute nothing. */
static void *next_definition(const char *name) {
  void *found = dlsym(RTLD_NEXT, name);
  if (found == NULL) {
    fprintf(stderr,
            "mlx-harmony BLAS guard: no %s after the guard in the symbol "
            "lookup; re-run `python3 scripts/setup-mlx.py` (or set "
            "MLX_HARMONY_OPENBLAS=off)\n",
            name);
    abort();
  }
  return found;
}

/* CBLAS's enums, as ints (the ABI passes them so). */
typedef int order_t;
typedef int transpose_t;

typedef void (*sgemm_fn)(order_t, transpose_t, transpose_t, int, int, int, float,
                         const float *, int, const float *, int, float, float *,
                         int);
typedef void (*dgemm_fn)(order_t, transpose_t, transpose_t, int, int, int,
                         double, const double *, int, const double *, int,
                         double, double *, int);
typedef void (*cgemm_fn)(order_t, transpose_t, transpose_t, int, int, int,
                         const void *, const void *, int, const void *, int,
                         const void *, void *, int);

static sgemm_fn next_sgemm;
static dgemm_fn next_dgemm;
static cgemm_fn next_cgemm;

/* Looked up once, at load, before any thread can call. */
__attribute__((constructor)) static void find_next_definitions(void) {
  next_sgemm = (sgemm_fn)next_definition("cblas_sgemm");
  next_dgemm = (dgemm_fn)next_definition("cblas_dgemm");
  next_cgemm = (cgemm_fn)next_definition("cblas_cgemm");
}

/* Where the products really run: crates/core's device::cpu_blas names the
 * library that defines this. */
void *mlx_harmony_blas_guard_sgemm(void) { return (void *)next_sgemm; }

void cblas_sgemm(order_t order, transpose_t trans_a, transpose_t trans_b, int m,
                 int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc) {
  pthread_mutex_lock(&blas_turn);
  next_sgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
             ldc);
  pthread_mutex_unlock(&blas_turn);
}

void cblas_dgemm(order_t order, transpose_t trans_a, transpose_t trans_b, int m,
                 int n, int k, double alpha, const double *a, int lda,
                 const double *b, int ldb, double beta, double *c, int ldc) {
  pthread_mutex_lock(&blas_turn);
  next_dgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
             ldc);
  pthread_mutex_unlock(&blas_turn);
}

void cblas_cgemm(order_t order, transpose_t trans_a, transpose_t trans_b, int m,
                 int n, int k, const void *alpha, const void *a, int lda,
                 const void *b, int ldb, const void *beta, void *c, int ldc) {
  pthread_mutex_lock(&blas_turn);
  next_cgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
             ldc);
  pthread_mutex_unlock(&blas_turn);
}
