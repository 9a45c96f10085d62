// Helpers and the product of the qmm_rows kernels: a quantized product for a
// few rows (2–64), `out[r, n] = sum_k x[r, k] * dequant(w)[n, k]`, on the
// tensor cores. Two kernels use it: qmm_rows_body.cu (one weight matrix) and
// qmm_gather_body.cu (mixture-of-experts: each expert's matrix applied to the
// rows that chose it). MLX prepends its own header (device utilities,
// cooperative groups) and wraps each body in the kernel's signature.
//
// Dequantization: affine, `q * scale + bias` per group (4 or 8 bits, any T
// scales); or MXFP4, an E2M1 value times 2^(e - 127) for an E8M0 byte `e`
// per 32 values (no biases).
//
// The product runs as mma.sync m16n8k16 with the weights as the A operand
// (16 output features a tile) and the activations as B (8 rows a tile). The
// reduction order inside one mma is free, so each thread's four k positions of
// an mma are four *consecutive* positions of the packed weights: a thread
// dequantizes the values of one 32-bit word straight into its A fragment, and
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

// An E2M1 code (sign, 2 exponent bits, 1 mantissa bit) as a float, built from
// its bits: exponent e > 0 is 2^(e-1) * (1 + m/2), e == 0 is m/2.
__device__ __forceinline__ float e2m1(uint32_t code) {
  const uint32_t e = (code >> 1) & 3u;
  const uint32_t m = code & 1u;
  const uint32_t magnitude = e ? (((e + 126u) << 23) | (m << 22)) : (m ? 0x3F000000u : 0u);
  return __uint_as_float(magnitude | ((code & 8u) << 28));
}

// The `j`-th weight of a run of words, dequantized.
template <int BITS, bool MXFP4>
__device__ __forceinline__ float weight_at(const uint32_t* words, int j, float scale, float bias) {
  if constexpr (MXFP4) {
    const uint32_t code = (words[j / 8] >> (4 * (j % 8))) & 15u;
    return e2m1(code) * scale;
  } else {
    return value_at<BITS>(words, j) * scale + bias;
  }
}

template <typename A, typename B>
struct same_type {
  static constexpr bool value = false;
};
template <typename A>
struct same_type<A, A> {
  static constexpr bool value = true;
};

// PTX prmt (generic mode): byte i of the result is byte (selector nibble i
// & 7) of {a, b} (a's bytes 0-3, b's 4-7), or, when the nibble's bit 3 is
// set, that byte's sign bit repeated over all eight bits.
__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t selector) {
  uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(selector));
  return d;
}

// Four MXFP4 values (nibbles 4*quad .. 4*quad+3 of `word`) as two bfloat16
// pairs (values 0-1 and 2-3), times the group's scale: `half_scale` holds
// 2^(e-128) in both halves, since the table below holds twice each E2M1
// magnitude (0, 1, 2, 3, 4, 6, 8, 12: each exact in bfloat16, as is its
// product with a power of two). The float route (e2m1 above) costs about ten
// operations a value; this one about two and a half, where dequantizing,
// not reading the weights, limits the experts' kernel.
__device__ __forceinline__ void mxfp4_quad_bf16(uint32_t word, int quad, uint32_t half_scale,
                                                uint32_t& first, uint32_t& second) {
  // Each code's magnitude as the high and low bytes of its bfloat16 bits.
  const uint32_t codes = (word >> (16 * quad)) & 0x7777u;
  const uint32_t high = prmt(0x40403F00u, 0x41414040u, codes);
  const uint32_t low = prmt(0x40008000u, 0x4000C080u, codes);
  // Each code's sign bit (bit 3 of its nibble) as a byte of 0xFF or 0x00:
  // a nibble's bit 3 is the top bit of its byte in word << 4 (even nibbles)
  // or in word (odd ones).
  const uint32_t signs = prmt(word << 4, word, quad ? 0xFBEAu : 0xD9C8u);
  const uint32_t signed_high = high | (signs & 0x80808080u);
  uint32_t pair01 = prmt(low, signed_high, 0x5140u);
  uint32_t pair23 = prmt(low, signed_high, 0x7362u);
  const __nv_bfloat162 scale = *reinterpret_cast<const __nv_bfloat162*>(&half_scale);
  __nv_bfloat162 v01 = __hmul2(*reinterpret_cast<__nv_bfloat162*>(&pair01), scale);
  __nv_bfloat162 v23 = __hmul2(*reinterpret_cast<__nv_bfloat162*>(&pair23), scale);
  first = *reinterpret_cast<uint32_t*>(&v01);
  second = *reinterpret_cast<uint32_t*>(&v23);
}

// Two 4-bit affine values, bits 0-3 and 16-19 of `word`, dequantized as a
// pair of 16-bit floats (`Pair`): each code goes into the mantissa of a
// 16-bit float that holds `magic` + q exactly, `magic` is taken away (exact),
// then one fused `q * scale + bias` per pair, rounded once. About two
// operations a value against about six on the float route (value_at, then a
// conversion).
template <typename Pair>
__device__ __forceinline__ uint32_t affine4_pair_of(uint32_t word, uint32_t scale2,
                                                    uint32_t bias2, uint32_t magic) {
  const uint32_t biased = (word & 0x000F000Fu) | magic;
  const Pair q = __hsub2(*reinterpret_cast<const Pair*>(&biased),
                         *reinterpret_cast<const Pair*>(&magic));
  Pair v = __hfma2(q, *reinterpret_cast<const Pair*>(&scale2),
                   *reinterpret_cast<const Pair*>(&bias2));
  return *reinterpret_cast<uint32_t*>(&v);
}

// The magic numbers: 128 in bfloat16 (7 mantissa bits), 1024 in float16 (10).
__device__ __forceinline__ uint32_t affine4_pair(uint32_t word, uint32_t scale2, uint32_t bias2,
                                                 __nv_bfloat16) {
  return affine4_pair_of<__nv_bfloat162>(word, scale2, bias2, 0x43004300u);
}

__device__ __forceinline__ uint32_t affine4_pair(uint32_t word, uint32_t scale2, uint32_t bias2,
                                                 __half) {
  return affine4_pair_of<__half2>(word, scale2, bias2, 0x64006400u);
}

// 2^(e-128) in both bfloat16 halves, from a group's scale 2^(e-127) as a
// float (0 for e <= 1, a value no weight of a trained model has).
__device__ __forceinline__ uint32_t half_scale_bf16x2(float scale) {
  const uint32_t bits = __float_as_uint(scale) >> 16;
  const uint32_t half = bits > 0x80u ? bits - 0x80u : 0u;
  return half | (half << 16);
}

// A group's scale as a float: an E8M0 byte is 2^(e - 127), which is the byte
// in a float's exponent field; an affine scale is converted.
template <bool MXFP4, typename S>
__device__ __forceinline__ float scale_of(S s) {
  if constexpr (MXFP4) {
    return __uint_as_float(static_cast<uint32_t>(s) << 23);
  } else {
    return static_cast<float>(s);
  }
}

// One chunk's scale and bias of features g and g + 8 (`s`: scale, bias of g,
// then of g + 8, as floats) in the forms the dequantization routes take; a
// route's unused forms are compiled away.
template <typename T>
struct ChunkScales {
  float scale_lo, bias_lo, scale_hi, bias_hi;
  // The bfloat16 MXFP4 route's scales.
  uint32_t half_lo, half_hi;
  // The paired route's scales and biases, two of each (exact: they were T).
  uint32_t scale2_lo, scale2_hi, bias2_lo, bias2_hi;

  __device__ __forceinline__ explicit ChunkScales(const float* s)
      : scale_lo(s[0]), bias_lo(s[1]), scale_hi(s[2]), bias_hi(s[3]),
        half_lo(half_scale_bf16x2(s[0])), half_hi(half_scale_bf16x2(s[2])),
        scale2_lo(pack2(s[0], s[0], T{})), scale2_hi(pack2(s[2], s[2], T{})),
        bias2_lo(pack2(s[1], s[1], T{})), bias2_hi(pack2(s[3], s[3], T{})) {}
};

// The A fragment of one mma: the weights of features g (`q_lo`, the
// thread's packed words of this chunk) and g + 8 (`q_hi`) at the four k
// positions of half `h` of octet `o`, dequantized (see `product` for the
// positions each route takes).
template <typename T, int BITS, bool MXFP4, bool PAIRED>
__device__ __forceinline__ void weight_fragment(const uint32_t* q_lo, const uint32_t* q_hi,
                                                const ChunkScales<T>& s, int o, int h,
                                                uint32_t* a) {
  const int j = 8 * o + 4 * h;
  if constexpr (PAIRED) {
    // Word o's nibbles (2h, 2h + 4), then (2h + 1, 2h + 5): h = 0
    // takes octet positions {0, 4, 1, 5}, h = 1 {2, 6, 3, 7}.
    const int shift = 8 * h;
    a[0] = affine4_pair(q_lo[o] >> shift, s.scale2_lo, s.bias2_lo, T{});
    a[1] = affine4_pair(q_hi[o] >> shift, s.scale2_hi, s.bias2_hi, T{});
    a[2] = affine4_pair(q_lo[o] >> (shift + 4), s.scale2_lo, s.bias2_lo, T{});
    a[3] = affine4_pair(q_hi[o] >> (shift + 4), s.scale2_hi, s.bias2_hi, T{});
  } else if constexpr (MXFP4 && same_type<T, __nv_bfloat16>::value) {
    // Nibbles j .. j + 3: word j / 8, quad (j % 8) / 4.
    mxfp4_quad_bf16(q_lo[j / 8], (j % 8) / 4, s.half_lo, a[0], a[2]);
    mxfp4_quad_bf16(q_hi[j / 8], (j % 8) / 4, s.half_hi, a[1], a[3]);
  } else {
    a[0] = pack2(weight_at<BITS, MXFP4>(q_lo, j, s.scale_lo, s.bias_lo),
                 weight_at<BITS, MXFP4>(q_lo, j + 1, s.scale_lo, s.bias_lo), T{});
    a[1] = pack2(weight_at<BITS, MXFP4>(q_hi, j, s.scale_hi, s.bias_hi),
                 weight_at<BITS, MXFP4>(q_hi, j + 1, s.scale_hi, s.bias_hi), T{});
    a[2] = pack2(weight_at<BITS, MXFP4>(q_lo, j + 2, s.scale_lo, s.bias_lo),
                 weight_at<BITS, MXFP4>(q_lo, j + 3, s.scale_lo, s.bias_lo), T{});
    a[3] = pack2(weight_at<BITS, MXFP4>(q_hi, j + 2, s.scale_hi, s.bias_hi),
                 weight_at<BITS, MXFP4>(q_hi, j + 3, s.scale_hi, s.bias_hi), T{});
  }
}

// The B fragment of one mma: x at the same k positions as weight_fragment's,
// out of the octet's 16-byte load `xs` (one row of the tile per thread).
template <bool PAIRED>
__device__ __forceinline__ void x_fragment(const uint4& xs, int h, uint32_t& b0, uint32_t& b1) {
  if constexpr (PAIRED) {
    // x at octet positions (i, i + 4) and (i + 1, i + 5), i = 2h: the low
    // or high halves of words h and h + 2 of the load.
    const uint32_t first = h == 0 ? xs.x : xs.y;
    const uint32_t fifth = h == 0 ? xs.z : xs.w;
    b0 = prmt(first, fifth, 0x5410u);
    b1 = prmt(first, fifth, 0x7632u);
  } else {
    b0 = h == 0 ? xs.x : xs.z;
    b1 = h == 0 ? xs.y : xs.w;
  }
}

// The warps' accumulators of one tile of 16 features added up through shared
// memory `partial`: acc[t][0..1] are feature g, rows 8t + 2c + {0, 1};
// acc[t][2..3] feature g + 8, the same rows (lane = 4 * g + c of warp
// `warp`). Each sum of a row below `rows` goes to `write(row, feature, sum)`
// (feature 0..15 of the tile). Called by every thread of the block;
// `partial` may be used again after a __syncthreads().
template <int NT, int WARPS, typename Write>
__device__ __forceinline__ void sum_warps(const float (&acc)[NT][4],
                                          float (&partial)[WARPS][NT * 8][16], int warp, int g,
                                          int c, int rows, Write write) {
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    partial[warp][t * 8 + 2 * c][g] = acc[t][0];
    partial[warp][t * 8 + 2 * c + 1][g] = acc[t][1];
    partial[warp][t * 8 + 2 * c][g + 8] = acc[t][2];
    partial[warp][t * 8 + 2 * c + 1][g + 8] = acc[t][3];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < NT * 8 * 16; i += WARPS * 32) {
    const int row = i / 16;
    const int feature = i % 16;
    if (row < rows) {
      float sum = 0.f;
#pragma unroll
      for (int v = 0; v < WARPS; ++v) {
        sum += partial[v][row][feature];
      }
      write(row, feature, sum);
    }
  }
}

// out[r, n0 .. n0 + 16) for r < rows, of x [rows, K] (row stride K) and
// w [N, K * BITS / 32] with its scales and biases [N, K / GROUP] (biases
// unread for MXFP4). With `picked` (the experts' kernel), row r is instead
// row picked[r] / X_PER_ROW of x and row picked[r] of out. Called by every
// thread of a block of WARPS warps; the warps take the K chunks in turn and
// add their partial sums through shared memory. In a warp, lane = 4 * g + c:
// g picks the feature pair (g, g + 8) and the row of each row tile, c the
// thread's 8*V consecutive k of each chunk. `rows` may be anything up to
// 8 * NT; row tiles past it are skipped (the same for the whole block, so
// the warps do not diverge).
//
// STAGES: the chunks of weights each warp has loading while it multiplies
// one (1: the next; MLX_HARMONY_QMM_STAGES picks it, crates/core/src/qmm_rows.rs).
//
// PAIRED (4-bit affine only, scales of type T): the weights are dequantized
// two at a time (affine4_pair), which pairs the codes of nibbles i and i + 4
// of a word. A thread's four k positions of an mma are then octet positions
// {i, i + 4, i + 1, i + 5} (i = 0 or 2) instead of four consecutive ones, and
// its B fragment is the same four positions of x, picked out of the octet's
// 16-byte load by byte permutes.
//
// x is read an octet at a time, just before its products (16 bytes a row
// tile, from L2 mostly: every block reads all of x). Reading a whole chunk's,
// or the next chunk's with its weights, measured no faster at 4–64 rows
// (scripts/qmm_rows.py, H200, 2026-12-01: the registers they hold cost more
// than the latency they hide). Rows past `rows` in a tile read the last row
// again (their results are not written): no branch per load.
template <typename T, int BITS, int GROUP, int V, int NT, int WARPS, bool MXFP4, bool PAIRED,
          int STAGES, typename S, typename B>
__device__ __forceinline__ void product(const T* x, const uint32_t* w, const S* scales,
                                        const B* biases, T* out, int rows, int K, int N,
                                        int n0, const int* picked = nullptr,
                                        int x_per_row = 1) {
  constexpr int CHUNK = 32 * V;        // k per warp per step
  constexpr int WORDS = V * BITS / 4;  // packed words per thread per feature per step
  const int words_per_row = K * BITS / 32;
  const int groups_per_row = K / GROUP;

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int c = lane % 4;

  const uint32_t* w_lo = w + (size_t)(n0 + g) * words_per_row;
  const uint32_t* w_hi = w + (size_t)(n0 + g + 8) * words_per_row;
  const S* s_lo = scales + (size_t)(n0 + g) * groups_per_row;
  const S* s_hi = scales + (size_t)(n0 + g + 8) * groups_per_row;
  const B* b_lo = biases + (MXFP4 ? 0 : (size_t)(n0 + g) * groups_per_row);
  const B* b_hi = biases + (MXFP4 ? 0 : (size_t)(n0 + g + 8) * groups_per_row);

  float acc[NT][4];
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.f;
  }

  static_assert(!PAIRED || (BITS == 4 && !MXFP4 && same_type<S, T>::value),
                "the paired route is for 4-bit affine weights with scales of type T");
  const int chunks = K / CHUNK;
  // Each row tile's row of x for this thread (clamped to the last row), at
  // the thread's first k.
  const T* x_rows[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const int row = min(t * 8 + g, rows - 1);
    const int from = picked ? picked[row] / x_per_row : row;
    x_rows[t] = x + (size_t)from * K + c * 8 * V;
  }
  // Octet o of a chunk's x for row tile t.
  auto x_octet = [&](int chunk, int o, int t) {
    return __ldg(reinterpret_cast<const uint4*>(x_rows[t] + chunk * CHUNK + 8 * o));
  };
  // The weights and scales of the chunk STAGES ahead (this warp's chunks
  // go warp, warp + WARPS, ...) are loaded before this chunk's are used, so
  // that each warp keeps STAGES loads in flight while it multiplies: with
  // K = 4 096 a warp has only four chunks, and one load ahead leaves each
  // chunk waiting for its weights. The stages are registers: the loop over
  // them is unrolled, so every index into them is a constant.
  uint32_t next_lo[STAGES][WORDS], next_hi[STAGES][WORDS];
  float next_scales[STAGES][4];
  auto load_chunk = [&](int chunk, uint32_t* lo, uint32_t* hi, float* scales_out) {
    const int k0 = chunk * CHUNK + c * 8 * V;
    load_words<WORDS>(w_lo + k0 * BITS / 32, lo);
    load_words<WORDS>(w_hi + k0 * BITS / 32, hi);
    const int group = k0 / GROUP;
    scales_out[0] = scale_of<MXFP4>(s_lo[group]);
    scales_out[2] = scale_of<MXFP4>(s_hi[group]);
    if constexpr (MXFP4) {
      scales_out[1] = scales_out[3] = 0.f;
    } else {
      scales_out[1] = static_cast<float>(b_lo[group]);
      scales_out[3] = static_cast<float>(b_hi[group]);
    }
  };
#pragma unroll
  for (int stage = 0; stage < STAGES; ++stage) {
    if (warp + stage * WARPS < chunks) {
      load_chunk(warp + stage * WARPS, next_lo[stage], next_hi[stage], next_scales[stage]);
    }
  }
  for (int first = warp; first < chunks; first += STAGES * WARPS) {
#pragma unroll
    for (int stage = 0; stage < STAGES; ++stage) {
      // The same for the whole warp: no divergence.
      const int chunk = first + stage * WARPS;
      if (chunk >= chunks) {
        break;
      }
      uint32_t q_lo[WORDS], q_hi[WORDS];
#pragma unroll
      for (int i = 0; i < WORDS; ++i) {
        q_lo[i] = next_lo[stage][i];
        q_hi[i] = next_hi[stage][i];
      }
      const ChunkScales<T> chunk_scales(next_scales[stage]);
      if (chunk + STAGES * WARPS < chunks) {
        load_chunk(chunk + STAGES * WARPS, next_lo[stage], next_hi[stage], next_scales[stage]);
      }
#pragma unroll
      for (int o = 0; o < V; ++o) {
        // This octet's x for each row tile (tiles past `rows` skipped: the
        // same for the whole block).
        uint4 xs[NT];
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          xs[t] = t * 8 < rows ? x_octet(chunk, o, t) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          uint32_t a[4];
          weight_fragment<T, BITS, MXFP4, PAIRED>(q_lo, q_hi, chunk_scales, o, h, a);
#pragma unroll
          for (int t = 0; t < NT; ++t) {
            if (t * 8 < rows) {
              uint32_t b0, b1;
              x_fragment<PAIRED>(xs[t], h, b0, b1);
              mma(acc[t], a, b0, b1, T{});
            }
          }
        }
      }
    }
  }

  // The warps add up through shared memory.
  __shared__ float partial[WARPS][NT * 8][16];
  sum_warps<NT, WARPS>(acc, partial, warp, g, c, rows, [&](int row, int feature, float sum) {
    const int to = picked ? picked[row] : row;
    out[(size_t)to * N + n0 + feature] = static_cast<T>(sum);
  });
}

// The wide form of `product` (the qmm_wide kernel): each warp multiplies FT
// tiles of 16 output features from n0 (tiles past N skipped) with each load
// of x, and the block takes only its share of K, chunks [first, last) for
// split `split` of `splits` (blockIdx.z of gridDim.z).
//
// Why: `product` reads a row tile's x (16 bytes a thread an octet, from L2)
// for every 16 features, so at 16 rows a warp reads four times as many bytes
// of x as of weights, and from 16 rows on its time grows with the rows, not
// the weights (scripts/qmm_rows.py, H200). FT tiles a load of x cut that by
// FT, and load FT times as many weight bytes per thread at once. Splitting K
// over blocks keeps the GPU full when N / (16 FT) blocks would not (4 096
// features make 64 blocks of 64).
//
// `out` is T, [rows, N], when splits == 1; float, [splits, rows, N], this
// block's sums in slice `split`, otherwise (the qmm_sum_splits kernel adds
// the slices up). Registers: FT * NT * 4 accumulators; the caller keeps
// FT * NT <= 8.
template <typename T, int BITS, int GROUP, int V, int NT, int WARPS, bool MXFP4, bool PAIRED,
          int FT, typename S, typename B, typename O>
__device__ __forceinline__ void product_wide(const T* x, const uint32_t* w, const S* scales,
                                             const B* biases, O* out, int rows, int K, int N,
                                             int n0, int split, int splits) {
  constexpr int CHUNK = 32 * V;
  constexpr int WORDS = V * BITS / 4;
  static_assert(!PAIRED || (BITS == 4 && !MXFP4 && same_type<S, T>::value),
                "the paired route is for 4-bit affine weights with scales of type T");
  const int words_per_row = K * BITS / 32;
  const int groups_per_row = K / GROUP;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int c = lane % 4;
  // The same for every thread of the block: branches on it do not diverge.
  const int tiles = min(FT, (N - n0) / 16);
  const int chunks = K / CHUNK;
  const int per_split = (chunks + splits - 1) / splits;
  const int first = split * per_split;
  const int last = min(chunks, first + per_split);

  float acc[FT][NT][4];
#pragma unroll
  for (int f = 0; f < FT; ++f) {
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      acc[f][t][0] = acc[f][t][1] = acc[f][t][2] = acc[f][t][3] = 0.f;
    }
  }
  const T* x_rows[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    x_rows[t] = x + (size_t)min(t * 8 + g, rows - 1) * K + c * 8 * V;
  }
  // As in `product`: the next chunk's weights and scales, for every tile,
  // are loaded before this chunk's are used.
  uint32_t next[FT][2][WORDS];
  float next_scales[FT][4];
  auto load_chunk = [&](int chunk) {
    const int k0 = chunk * CHUNK + c * 8 * V;
    const int group = k0 / GROUP;
#pragma unroll
    for (int f = 0; f < FT; ++f) {
      if (f < tiles) {
        const size_t lo = (size_t)(n0 + 16 * f + g);
        const size_t hi = lo + 8;
        load_words<WORDS>(w + lo * words_per_row + k0 * BITS / 32, next[f][0]);
        load_words<WORDS>(w + hi * words_per_row + k0 * BITS / 32, next[f][1]);
        next_scales[f][0] = scale_of<MXFP4>(scales[lo * groups_per_row + group]);
        next_scales[f][2] = scale_of<MXFP4>(scales[hi * groups_per_row + group]);
        if constexpr (MXFP4) {
          next_scales[f][1] = next_scales[f][3] = 0.f;
        } else {
          next_scales[f][1] = static_cast<float>(biases[lo * groups_per_row + group]);
          next_scales[f][3] = static_cast<float>(biases[hi * groups_per_row + group]);
        }
      }
    }
  };
  if (first + warp < last) {
    load_chunk(first + warp);
  }
  for (int chunk = first + warp; chunk < last; chunk += WARPS) {
    uint32_t q[FT][2][WORDS];
    float s[FT][4];
#pragma unroll
    for (int f = 0; f < FT; ++f) {
#pragma unroll
      for (int i = 0; i < WORDS; ++i) {
        q[f][0][i] = next[f][0][i];
        q[f][1][i] = next[f][1][i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        s[f][i] = next_scales[f][i];
      }
    }
    if (chunk + WARPS < last) {
      load_chunk(chunk + WARPS);
    }
#pragma unroll
    for (int o = 0; o < V; ++o) {
      uint4 xs[NT];
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        xs[t] = t * 8 < rows
                    ? __ldg(reinterpret_cast<const uint4*>(x_rows[t] + chunk * CHUNK + 8 * o))
                    : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        uint32_t b[NT][2];
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          x_fragment<PAIRED>(xs[t], h, b[t][0], b[t][1]);
        }
#pragma unroll
        for (int f = 0; f < FT; ++f) {
          if (f < tiles) {
            const ChunkScales<T> tile_scales(s[f]);
            uint32_t a[4];
            weight_fragment<T, BITS, MXFP4, PAIRED>(q[f][0], q[f][1], tile_scales, o, h, a);
#pragma unroll
            for (int t = 0; t < NT; ++t) {
              if (t * 8 < rows) {
                mma(acc[f][t], a, b[t][0], b[t][1], T{});
              }
            }
          }
        }
      }
    }
  }

  // The warps' sums added up a tile at a time, then written: T, or this
  // split's float slice.
  __shared__ float partial[WARPS][NT * 8][16];
#pragma unroll
  for (int f = 0; f < FT; ++f) {
    if (f < tiles) {
      sum_warps<NT, WARPS>(acc[f], partial, warp, g, c, rows, [&](int row, int feature, float sum) {
        const int n = n0 + 16 * f + feature;
        if constexpr (same_type<O, float>::value) {
          out[((size_t)split * rows + row) * N + n] = sum;
        } else {
          out[(size_t)row * N + n] = static_cast<T>(sum);
        }
      });
      // The next tile reuses `partial`.
      __syncthreads();
    }
  }
}

} // namespace qmm_rows
