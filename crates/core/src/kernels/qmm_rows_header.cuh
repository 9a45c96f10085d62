// Helpers for qmm_rows_body.cu: a quantized product for a few rows (2–64),
// `out[r, n] = sum_k x[r, k] * (q[n, k] * scale[n, k / GROUP] + bias[n, k / GROUP])`,
// on the tensor cores. MLX prepends its own header (device utilities,
// cooperative groups) and wraps the body in the kernel's signature.
//
// The product runs as mma.sync m16n8k16 with the weights as the A operand
// (16 output features a tile) and the activations as B (8 rows a tile). The
// reduction order inside one mma is free, so each thread's four k positions of
// an mma are four *consecutive* positions of the packed weights: a thread
// dequantizes the nibbles of one 32-bit word straight into its A fragment, and
// its B fragment is one 8-byte load of the same four positions of x.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace qmm_rows {

__device__ __forceinline__ uint32_t pack2(float lo, float hi, __nv_bfloat16) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ uint32_t pack2(float lo, float hi, __half) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// d += a * b for one 16x8x16 tile, float accumulators.
__device__ __forceinline__ void mma(float* d, const uint32_t* a, uint32_t b0, uint32_t b1,
                                    __nv_bfloat16) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma(float* d, const uint32_t* a, uint32_t b0, uint32_t b1,
                                    __half) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Loads `N` consecutive 32-bit words, 16 bytes at a time where `N` allows
// (the caller guarantees the alignment: see the body's choice of V).
template <int N>
__device__ __forceinline__ void load_words(const uint32_t* src, uint32_t* dst) {
  if constexpr (N % 4 == 0) {
#pragma unroll
    for (int i = 0; i < N / 4; ++i) {
      uint4 v = __ldg(reinterpret_cast<const uint4*>(src) + i);
      dst[4 * i] = v.x;
      dst[4 * i + 1] = v.y;
      dst[4 * i + 2] = v.z;
      dst[4 * i + 3] = v.w;
    }
  } else if constexpr (N % 2 == 0) {
#pragma unroll
    for (int i = 0; i < N / 2; ++i) {
      uint2 v = __ldg(reinterpret_cast<const uint2*>(src) + i);
      dst[2 * i] = v.x;
      dst[2 * i + 1] = v.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      dst[i] = __ldg(src + i);
    }
  }
}

// The `j`-th quantized value (0..7 for 4 bits, 0..3 for 8) of a run of words,
// as a float. The integer goes into the mantissa of 2^23 and 2^23 is taken
// away again (exact for any q < 2^23): two full-rate operations instead of an
// integer-to-float conversion, which runs at a quarter of the rate.
template <int BITS>
__device__ __forceinline__ float value_at(const uint32_t* words, int j) {
  constexpr int per_word = 32 / BITS;
  constexpr uint32_t mask = (1u << BITS) - 1u;
  const uint32_t q = (words[j / per_word] >> (BITS * (j % per_word))) & mask;
  return __uint_as_float(0x4B000000u | q) - 8388608.0f;
}

} // namespace qmm_rows
