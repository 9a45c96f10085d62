//! What mlx-harmony's programs (chat, generate, server) share above the
//! engine: the flags and profiles that choose and open a model ([`args`]),
//! prompt configs mapped onto the engine's prompt setup and sampler
//! ([`setup`]), the tool executors wired into the engine's tool loop
//! ([`tools`]), printing statistics and exiting ([`report`]), and the
//! random-weights byte model ([`byte_model`]), and running as one rank of
//! a tensor-parallel group ([`tensor_parallel`]).
//!
//! The engine (`mlx-harmony-core`) knows nothing of command lines, config
//! files or how a tool runs; this crate is where those meet it, so that the
//! binaries keep only their own argument parsing and a call.

pub mod args;
pub mod byte_model;
pub mod oneshot;
pub mod report;
pub mod setup;
pub mod tensor_parallel;
pub mod tools;

/// An error of a library whose message already says everything (its
/// sources included), as one line: `{:#}` would repeat the source.
pub fn flat(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{error}")
}
