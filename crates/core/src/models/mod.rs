//! Model architectures, one module each, in the shape of mlx-lm's `models/`.

pub mod llama;
