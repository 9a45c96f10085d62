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

/* One guarded gemm: the type of the next definition, a pointer to it, and
 * `cblas_<name>` calling it under the lock. The three differ only in the
 * types of the scalars (alpha, beta) and of the matrices' elements. */
#define GUARDED_GEMM(name, scalar, element)                                    \
  typedef void (*name##_fn)(order_t, transpose_t, transpose_t, int, int, int,  \
                            scalar, const element *, int, const element *,     \
                            int, scalar, element *, int);                      \
  static name##_fn next_##name;                                                \
  void cblas_##name(order_t order, transpose_t trans_a, transpose_t trans_b,   \
                    int m, int n, int k, scalar alpha, const element *a,       \
                    int lda, const element *b, int ldb, scalar beta,           \
                    element *c, int ldc) {                                     \
    pthread_mutex_lock(&blas_turn);                                            \
    next_##name(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, \
                c, ldc);                                                       \
    pthread_mutex_unlock(&blas_turn);                                          \
  }

GUARDED_GEMM(sgemm, float, float)
GUARDED_GEMM(dgemm, double, double)
/* Complex single precision: scalars and elements passed by pointer. */
GUARDED_GEMM(cgemm, const void *, void)

/* Looked up once, at load, before any thread can call. */
__attribute__((constructor)) static void find_next_definitions(void) {
  next_sgemm = (sgemm_fn)next_definition("cblas_sgemm");
  next_dgemm = (dgemm_fn)next_definition("cblas_dgemm");
  next_cgemm = (cgemm_fn)next_definition("cblas_cgemm");
}

/* Where the products really run: crates/core's device::cpu_blas names the
 * library that defines this. */
void *mlx_harmony_blas_guard_sgemm(void) { return (void *)next_sgemm; }
