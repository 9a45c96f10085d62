// Body of the qmm_rows kernel: one quantized weight matrix (see
// qmm_rows_header.cuh). MLX generates the signature: inputs x [R, K] (T),
// w [N, K*BITS/32] (uint32), scales [N, K/GROUP] (T, or uint8 for MXFP4) and
// biases (as the scales; for MXFP4 any array, unread); output out [R, N] (T).
// Template arguments: T, BITS (4 or 8), GROUP (32, 64 or 128), V (octets of k
// a thread takes per chunk: 4 when K % 128 == 0, 2 when K % 64 == 0, else 1),
// NT (row tiles of 8: R <= 8 * NT), WARPS (warps a block; they split K),
// MXFP4, PAIRED (4-bit affine: dequantize two at a time), STAGES (chunks of
// weights a warp has loading ahead). A block computes 16 output features for
// every row.
qmm_rows::product<T, BITS, GROUP, V, NT, WARPS, MXFP4, PAIRED, STAGES>(
    x, w, scales, biases, out, x_shape[0], x_shape[1], w_shape[0], blockIdx.x * 16);
