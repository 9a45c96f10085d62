// Body of the qmm_rows kernel (see qmm_rows_header.cuh). MLX generates the
// signature: inputs x [R, K] (T), w [N, K*BITS/32] (uint32), scales and
// biases [N, K/GROUP] (T); output out [R, N] (T). Template arguments: T,
// BITS (4 or 8), GROUP (32, 64 or 128), V (octets of k a thread takes per
// chunk: 4 when K % 128 == 0, else 1), NT (row tiles of 8: R <= 8 * NT),
// WARPS (warps a block; they split K).
//
// A block computes 16 output features for every row; its warps take the
// K chunks in turn and add their partial sums through shared memory. In a
// warp, lane = 4 * g + c: g picks the feature pair (g, g + 8) and the row of
// each row tile, c the thread's 8*V consecutive k of each chunk.
constexpr int CHUNK = 32 * V;                 // k per warp per step
constexpr int WORDS = V * BITS / 4;           // packed words per thread per row per step
const int rows = x_shape[0];
const int K = x_shape[1];
const int N = w_shape[0];
const int words_per_row = K * BITS / 32;
const int groups_per_row = K / GROUP;

const int warp = threadIdx.x / 32;
const int lane = threadIdx.x % 32;
const int g = lane / 4;
const int c = lane % 4;
const int n0 = blockIdx.x * 16;

const uint32_t* w_lo = w + (size_t)(n0 + g) * words_per_row;
const uint32_t* w_hi = w + (size_t)(n0 + g + 8) * words_per_row;
const T* s_lo = scales + (size_t)(n0 + g) * groups_per_row;
const T* s_hi = scales + (size_t)(n0 + g + 8) * groups_per_row;
const T* b_lo = biases + (size_t)(n0 + g) * groups_per_row;
const T* b_hi = biases + (size_t)(n0 + g + 8) * groups_per_row;

float acc[NT][4];
#pragma unroll
for (int t = 0; t < NT; ++t) {
  acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.f;
}

const int chunks = K / CHUNK;
// The next chunk's weights and scales are loaded before this chunk's are
// used, so that each warp keeps a load in flight while it multiplies.
uint32_t next_lo[WORDS], next_hi[WORDS];
T next_scales[4];
auto load_chunk = [&](int chunk) {
  const int k0 = chunk * CHUNK + c * 8 * V;
  qmm_rows::load_words<WORDS>(w_lo + k0 * BITS / 32, next_lo);
  qmm_rows::load_words<WORDS>(w_hi + k0 * BITS / 32, next_hi);
  const int group = k0 / GROUP;
  next_scales[0] = s_lo[group];
  next_scales[1] = b_lo[group];
  next_scales[2] = s_hi[group];
  next_scales[3] = b_hi[group];
};
if (warp < chunks) {
  load_chunk(warp);
}
for (int chunk = warp; chunk < chunks; chunk += WARPS) {
  const int k0 = chunk * CHUNK + c * 8 * V;
  uint32_t q_lo[WORDS], q_hi[WORDS];
#pragma unroll
  for (int i = 0; i < WORDS; ++i) {
    q_lo[i] = next_lo[i];
    q_hi[i] = next_hi[i];
  }
  const float scale_lo = static_cast<float>(next_scales[0]);
  const float bias_lo = static_cast<float>(next_scales[1]);
  const float scale_hi = static_cast<float>(next_scales[2]);
  const float bias_hi = static_cast<float>(next_scales[3]);
  if (chunk + WARPS < chunks) {
    load_chunk(chunk + WARPS);
  }
#pragma unroll
  for (int o = 0; o < V; ++o) {
    // This octet's x for each row tile: eight consecutive k, one 16-byte load.
    uint4 xs[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const int row = t * 8 + g;
      if (row < rows) {
        xs[t] = *reinterpret_cast<const uint4*>(x + (size_t)row * K + k0 + 8 * o);
      } else {
        xs[t] = make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int j = 8 * o + 4 * h;
      uint32_t a[4];
      a[0] = qmm_rows::pack2(qmm_rows::value_at<BITS>(q_lo, j) * scale_lo + bias_lo,
                             qmm_rows::value_at<BITS>(q_lo, j + 1) * scale_lo + bias_lo, T{});
      a[1] = qmm_rows::pack2(qmm_rows::value_at<BITS>(q_hi, j) * scale_hi + bias_hi,
                             qmm_rows::value_at<BITS>(q_hi, j + 1) * scale_hi + bias_hi, T{});
      a[2] = qmm_rows::pack2(qmm_rows::value_at<BITS>(q_lo, j + 2) * scale_lo + bias_lo,
                             qmm_rows::value_at<BITS>(q_lo, j + 3) * scale_lo + bias_lo, T{});
      a[3] = qmm_rows::pack2(qmm_rows::value_at<BITS>(q_hi, j + 2) * scale_hi + bias_hi,
                             qmm_rows::value_at<BITS>(q_hi, j + 3) * scale_hi + bias_hi, T{});
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        const uint32_t b0 = h == 0 ? xs[t].x : xs[t].z;
        const uint32_t b1 = h == 0 ? xs[t].y : xs[t].w;
        qmm_rows::mma(acc[t], a, b0, b1, T{});
      }
    }
  }
}

// acc[t][0..1]: feature n0 + g, rows 8t + 2c + {0, 1}; acc[t][2..3]: feature
// n0 + g + 8, the same rows. Warps add up through shared memory.
__shared__ float partial[WARPS][NT * 8][16];
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
    out[(size_t)row * N + n0 + feature] = static_cast<T>(sum);
  }
}
