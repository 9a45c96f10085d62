//! Our side of scripts/load-bench: how long a model takes from its files to
//! its first token, with the page cache cold or warm and with or without the
//! prewarm read. Prints one JSON line; the script runs each case in a fresh
//! process and takes medians.
//!
//! `cargo run --release -p mlx-harmony-core --example load_bench -- MODEL cold|warm prewarm|no-prewarm [first-token]`
//!
//! Steps timed: the prewarm read, building the model (lazy: nothing is read),
//! reading the weights (evaluating every checkpoint tensor, which is what
//! the first forward pass would do) and, with `first-token`, one forward
//! pass over the weights now in memory (kernel set-up and compute; left out
//! on CPUs, where a multi-GB model's first token is seconds of arithmetic).
//!
//! "cold" asks the kernel to drop the weight files from the page cache first
//! (`posix_fadvise(DONTNEED)`, which needs no root), so the weights come off
//! the disk; "warm" reads them once beforehand so they are all in the cache.

use std::path::{Path, PathBuf};
use std::time::Instant;

use mlx_harmony_core::checkpoint::Checkpoint;
use mlx_harmony_core::device::{self, DeviceChoice};
use mlx_harmony_core::loading::{prewarm, weight_bytes, weight_files};
use mlx_harmony_core::models::Model;
use mlx_rs::Array;
use mlx_rs::transforms::eval;

#[cfg(target_os = "linux")]
fn drop_from_page_cache(file: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use std::os::fd::AsRawFd;
    let handle = std::fs::File::open(file)?;
    // SAFETY: a valid open descriptor; offset 0 and length 0 mean the whole file.
    let status =
        unsafe { libc::posix_fadvise(handle.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if status != 0 {
        return Err(format!("posix_fadvise({}) failed: {status}", file.display()).into());
    }
    Ok(())
}

/// Only Linux can drop one file from the page cache without root.
#[cfg(not(target_os = "linux"))]
fn drop_from_page_cache(_file: &Path) -> Result<(), Box<dyn std::error::Error>> {
    Err(
        "cold-cache runs need Linux (posix_fadvise); on macOS run `sudo purge` before a \
         warm-cache run instead"
            .into(),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (model_dir, cache_state, read_ahead, first_token) = match args.as_slice() {
        [m, c, r] => (m, c, r, false),
        [m, c, r, f] if f == "first-token" => (m, c, r, true),
        _ => {
            return Err(
                "usage: load_bench MODEL cold|warm prewarm|no-prewarm [first-token]".into(),
            );
        }
    };
    let model_dir = PathBuf::from(model_dir);
    let files = weight_files(&model_dir);
    if files.is_empty() {
        return Err(format!("{}: no weight files", model_dir.display()).into());
    }
    match cache_state.as_str() {
        "cold" => {
            for file in &files {
                drop_from_page_cache(file)?;
            }
        }
        "warm" => {
            prewarm(&model_dir)?;
        }
        other => return Err(format!("cache state {other:?}: use cold or warm").into()),
    }
    let use_prewarm = match read_ahead.as_str() {
        "prewarm" => true,
        "no-prewarm" => false,
        other => return Err(format!("{other:?}: use prewarm or no-prewarm").into()),
    };
    let selected = device::select(DeviceChoice::Auto)?;

    // What `loading::open` does, timed step by step.
    let start = Instant::now();
    let prewarm_s = if use_prewarm {
        prewarm(&model_dir)?.seconds
    } else {
        0.0
    };
    let loaded = Instant::now();
    let checkpoint = Checkpoint::open(&model_dir)?;
    // The loaded arrays, shared with the model: evaluating them reads the files.
    let tensors: Vec<Array> = checkpoint.tensors.values().cloned().collect();
    let model = Model::from_checkpoint(checkpoint)?;
    let load_s = loaded.elapsed().as_secs_f64();
    let read = Instant::now();
    eval(&tensors)?;
    let read_s = read.elapsed().as_secs_f64();
    let total_s = start.elapsed().as_secs_f64();
    let first_token_s = if first_token {
        let first = Instant::now();
        let mut caches = model.new_caches();
        let logits = model.forward(&Array::from_slice(&[1u32], &[1, 1]), &mut caches)?;
        eval([&logits])?;
        first.elapsed().as_secs_f64()
    } else {
        f64::NAN
    };
    let bytes = weight_bytes(&model_dir);
    println!(
        "{{\"device\": \"{selected}\", \"cache\": \"{cache_state}\", \"prewarm\": {use_prewarm}, \
         \"gb\": {:.3}, \"prewarm_s\": {prewarm_s:.3}, \"load_s\": {load_s:.3}, \
         \"read_s\": {read_s:.3}, \"total_s\": {total_s:.3}, \"first_token_s\": {}}}",
        bytes as f64 / 1e9,
        if first_token_s.is_nan() {
            "null".to_string()
        } else {
            format!("{first_token_s:.3}")
        }
    );
    Ok(())
}
