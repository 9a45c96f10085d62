//! Symbols that mlx-rs expects from macOS and other systems lack.

/// mlx-rs seeds its default random key from this macOS clock. Elsewhere we
/// provide it from the monotonic clock, which serves the same purpose (a seed
/// that differs between runs).
#[cfg(not(target_os = "macos"))]
#[unsafe(no_mangle)]
pub extern "C" fn mach_approximate_time() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0)
}
