// Body of the attend_rows kernel (see attend_rows_header.cuh). MLX
// generates the signature: inputs q [rows, heads, D] (T), store_k, store_v
// [rows, kv_heads, capacity, D] (T), recent_k, recent_v [rows, kv_heads,
// recent capacity, D] (T), spans [rows + 2] (int32), sinks [heads] (any
// float type; unread unless SINKS); output out [rows, heads, D] (T).
// Template arguments: T, D (64 or 128), G (query heads a kv head), C
// (columns a group of lanes takes at a time), SINKS, SCALE_BITS (the bits
// of the float scale * log2(e)). One block of 256 threads per (row, kv
// head).
attend_rows::attend<T, D, G, C, SINKS>(
    q, store_k, store_v, recent_k, recent_v, spans, sinks, out, q_shape[0], store_k_shape[1],
    store_k_shape[2], recent_k_shape[2], __int_as_float(SCALE_BITS));
