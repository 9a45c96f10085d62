// Attention of a batched decode step (one query a row) over a batch cache
// kept in two parts: the store (every column before the last few steps) and
// the recent columns (the last few steps' keys and values, which are written
// into a small array, so that a step does not rewrite the whole cache: see
// crates/core/src/attend_rows.rs). Each row sees its columns from its own
// first one on (its left padding, or a sliding window's start), and
// optionally a sink logit per query head (GPT-OSS).
//
// A block is one (row, kv head) and its G query heads (grouped-query
// attention: the keys and values are read once for all of them). Its eight
// warps take the columns in turn, C at a time per group of eight lanes; the
// eight lanes of a group split the head dimension (E = D / 8 values each),
// so a column's score needs three shuffles, shared by the four groups of a
// warp. Each group keeps a running softmax (maximum, sum, weighted values)
// per query head; groups, then warps, are merged at the end. Scores are
// kept in base 2: q is multiplied by scale * log2(e) once.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace attend_rows {

__device__ __forceinline__ float2 to_float2(uint32_t pair, __nv_bfloat16) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&pair));
}

__device__ __forceinline__ float2 to_float2(uint32_t pair, __half) {
  return __half22float2(*reinterpret_cast<const __half2*>(&pair));
}

// E 16-bit values (E a multiple of 8), 16 bytes at a time.
template <int E>
struct Raw {
  uint4 part[E / 8];
};

template <int E, typename T>
__device__ __forceinline__ Raw<E> load(const T* p) {
  Raw<E> r;
#pragma unroll
  for (int i = 0; i < E / 8; ++i) {
    r.part[i] = __ldg(reinterpret_cast<const uint4*>(p) + i);
  }
  return r;
}

template <int E, typename T>
__device__ __forceinline__ void to_floats(const Raw<E>& r, float* v) {
#pragma unroll
  for (int i = 0; i < E / 8; ++i) {
    const uint32_t words[4] = {r.part[i].x, r.part[i].y, r.part[i].z, r.part[i].w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 f = to_float2(words[j], T{});
      v[8 * i + 2 * j] = f.x;
      v[8 * i + 2 * j + 1] = f.y;
    }
  }
}

// Merges another running softmax (m2, l2, acc2) into (m, l, acc).
template <int E>
__device__ __forceinline__ void merge(float& m, float& l, float* acc, float m2, float l2,
                                      const float* acc2) {
  const float top = fmaxf(m, m2);
  const float a = exp2f(m - top);
  const float b = exp2f(m2 - top);
  l = l * a + l2 * b;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    acc[e] = acc[e] * a + acc2[e] * b;
  }
  m = top;
}

// out[row, kv_head * G + g, :] for the block's (row, kv_head). q [rows,
// kv_heads * G, D]; the store's keys and values [rows, kv_heads, capacity,
// D]; the recent ones [rows, kv_heads, recent_capacity, D]; spans: each
// row's first column seen, then the store's columns in use, then all
// columns in use (store and recent); sinks [kv_heads * G] when SINKS.
template <typename T, int D, int G, int C, bool SINKS, typename S>
__device__ __forceinline__ void attend(const T* q, const T* store_k, const T* store_v,
                                       const T* recent_k, const T* recent_v, const int* spans,
                                       const S* sinks, T* out, int rows, int kv_heads,
                                       int capacity, int recent_capacity, float scale_log2) {
  constexpr int WARPS = 8;
  constexpr int LANES = 8;  // lanes a column
  constexpr int GROUPS = 32 / LANES;
  constexpr int E = D / LANES;
  constexpr float NONE = -1e30f;  // a running maximum before any column

  const int row = blockIdx.x / kv_heads;
  const int kv_head = blockIdx.x % kv_heads;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int group = lane / LANES;
  const int sub = lane % LANES;
  const int begin = spans[row];
  const int store_end = spans[rows];
  const int total = spans[rows + 1];

  const size_t head = (size_t)row * kv_heads + kv_head;
  float qs[G][E];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    to_floats<E, T>(load<E>(q + (head * G + g) * D + sub * E), qs[g]);
#pragma unroll
    for (int e = 0; e < E; ++e) {
      qs[g][e] *= scale_log2;
    }
  }
  float m[G], l[G], acc[G][E];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = NONE;
    l[g] = 0.f;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      acc[g][e] = 0.f;
    }
  }
  const T* sk = store_k + head * capacity * D + sub * E;
  const T* sv = store_v + head * capacity * D + sub * E;
  const T* rk = recent_k + head * recent_capacity * D + sub * E;
  const T* rv = recent_v + head * recent_capacity * D + sub * E;

  // The loop's bounds are the same for the whole warp (the shuffles need
  // every lane); columns past the end are loaded from column `begin` and
  // not counted.
  for (int base = begin + warp * GROUPS * C; base < total; base += WARPS * GROUPS * C) {
    Raw<E> k_raw[C], v_raw[C];
    bool valid[C];
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int j = base + group * C + c;
      valid[c] = j < total;
      const int at = valid[c] ? j : begin;
      const size_t offset_store = (size_t)at * D;
      const size_t offset_recent = (size_t)(at - store_end) * D;
      const bool in_store = at < store_end;
      k_raw[c] = load<E>(in_store ? sk + offset_store : rk + offset_recent);
      v_raw[c] = load<E>(in_store ? sv + offset_store : rv + offset_recent);
    }
    float ks[C][E];
#pragma unroll
    for (int c = 0; c < C; ++c) {
      to_floats<E, T>(k_raw[c], ks[c]);
    }
    float scores[G][C];
#pragma unroll
    for (int g = 0; g < G; ++g) {
#pragma unroll
      for (int c = 0; c < C; ++c) {
        float s = 0.f;
#pragma unroll
        for (int e = 0; e < E; ++e) {
          s = fmaf(qs[g][e], ks[c][e], s);
        }
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        s += __shfl_xor_sync(0xffffffffu, s, 2);
        s += __shfl_xor_sync(0xffffffffu, s, 4);
        scores[g][c] = valid[c] ? s : -__int_as_float(0x7f800000);  // -inf
      }
    }
    float vs[C][E];
#pragma unroll
    for (int c = 0; c < C; ++c) {
      to_floats<E, T>(v_raw[c], vs[c]);
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float top = m[g];
#pragma unroll
      for (int c = 0; c < C; ++c) {
        top = fmaxf(top, scores[g][c]);
      }
      const float shrink = exp2f(m[g] - top);
      l[g] *= shrink;
#pragma unroll
      for (int e = 0; e < E; ++e) {
        acc[g][e] *= shrink;
      }
#pragma unroll
      for (int c = 0; c < C; ++c) {
        const float p = exp2f(scores[g][c] - top);
        l[g] += p;
#pragma unroll
        for (int e = 0; e < E; ++e) {
          acc[g][e] = fmaf(p, vs[c][e], acc[g][e]);
        }
      }
      m[g] = top;
    }
  }

  // The warp's four groups into one (lanes with the same `sub`).
#pragma unroll
  for (int x = LANES; x < 32; x *= 2) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float other[E];
#pragma unroll
      for (int e = 0; e < E; ++e) {
        other[e] = __shfl_xor_sync(0xffffffffu, acc[g][e], x);
      }
      const float m2 = __shfl_xor_sync(0xffffffffu, m[g], x);
      const float l2 = __shfl_xor_sync(0xffffffffu, l[g], x);
      merge<E>(m[g], l[g], acc[g], m2, l2, other);
    }
  }

  // The warps into one, through shared memory.
  __shared__ float warp_m[WARPS][G];
  __shared__ float warp_l[WARPS][G];
  __shared__ float warp_acc[WARPS][G][D];
  if (group == 0) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      if (sub == 0) {
        warp_m[warp][g] = m[g];
        warp_l[warp][g] = l[g];
      }
#pragma unroll
      for (int e = 0; e < E; ++e) {
        warp_acc[warp][g][sub * E + e] = acc[g][e];
      }
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < G * D; i += WARPS * 32) {
    const int g = i / D;
    const int d = i % D;
    float top = NONE;
    float sink = 0.f;
    if constexpr (SINKS) {
      // The sink is one more logit, not scaled, with no value.
      sink = static_cast<float>(sinks[kv_head * G + g]) * 1.4426950408889634f;
      top = sink;
    }
#pragma unroll
    for (int w = 0; w < WARPS; ++w) {
      top = fmaxf(top, warp_m[w][g]);
    }
    float sum = SINKS ? exp2f(sink - top) : 0.f;
    float value = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) {
      const float weight = exp2f(warp_m[w][g] - top);
      sum += warp_l[w][g] * weight;
      value += warp_acc[w][g][d] * weight;
    }
    out[(head * G + g) * D + d] = static_cast<T>(value / sum);
  }
}

} // namespace attend_rows
