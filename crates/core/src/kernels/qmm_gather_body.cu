// Body of the qmm_gather kernel: mixture-of-experts products, each expert's
// quantized matrix applied to the rows that picked it (see
// qmm_rows_header.cuh). MLX generates the signature: inputs x [R, K] (T),
// w [E, N, K*BITS/32] (uint32), scales and biases [E, N, K/GROUP] (as in
// qmm_rows_body.cu), experts [P] (uint32: the expert of each (row, pick)
// pair, in any order); output out [P, N] (T): pair p is row p / X_PER_ROW of
// x times expert experts[p]'s matrix. The template arguments are
// qmm_rows_body.cu's, with NT covering the most pairs one expert can have
// (no more than the rows of x: a row picks an expert at most once), and
// X_PER_ROW (the picks of each row of x: the experts a token picks for its
// gate and up projections; 1 for the down projection, whose rows are pairs).
//
// Block (x, y) computes 16 output features of expert y for its pairs, which
// it lists first (in order, one ballot a 32 pairs); an expert no pair picked
// costs its blocks that scan only.
const int pairs = experts_shape[0];
const int K = x_shape[1];
const int N = w_shape[1];
const uint32_t expert = blockIdx.y;
__shared__ int picked[NT * 8];
__shared__ int count;
if (threadIdx.x < 32) {
  int found = 0;
  for (int base = 0; base < pairs; base += 32) {
    const int p = base + threadIdx.x;
    const bool mine = p < pairs && static_cast<uint32_t>(experts[p]) == expert;
    const uint32_t ballot = __ballot_sync(0xffffffffu, mine);
    const int at = found + __popc(ballot & ((1u << threadIdx.x) - 1u));
    if (mine && at < NT * 8) {
      picked[at] = p;
    }
    found += __popc(ballot);
  }
  if (threadIdx.x == 0) {
    count = found < NT * 8 ? found : NT * 8;
  }
}
__syncthreads();
const int rows = count;
// The same count for every thread: the whole block leaves or stays.
if (rows == 0) {
  return;
}
const size_t words_per_matrix = (size_t)N * (K * BITS / 32);
const size_t groups_per_matrix = (size_t)N * (K / GROUP);
qmm_rows::product<T, BITS, GROUP, V, NT, WARPS, MXFP4, PAIRED, STAGES>(
    x, w + expert * words_per_matrix, scales + expert * groups_per_matrix,
    biases + (MXFP4 ? 0 : expert * groups_per_matrix), out, rows, K, N, blockIdx.x * 16,
    picked, X_PER_ROW);
