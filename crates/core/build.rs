//! Stops a build off macOS early, with one clear message, when the checkout has
//! not been prepared by `scripts/setup-mlx.py`. Without that set-up Cargo.toml
//! leaves MLX out of the dependency graph (the stock mlx-sys would try to clone
//! and compile MLX for macOS and fail with pages of CMake output), so this
//! script is the first thing to run and say what to do.

fn main() {
    println!("cargo:rerun-if-env-changed=MLX_DIR");
    println!("cargo::rustc-check-cfg=cfg(mlx_harmony_mlx_ready)");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let ready = std::env::var_os("CARGO_CFG_MLX_HARMONY_MLX_READY").is_some()
        && std::env::var_os("MLX_DIR").is_some();
    if target_os != "macos" && !ready {
        eprintln!(
            "\nerror: MLX is not set up for this checkout.\n\
             \n  On Linux, mlx-harmony builds against the prebuilt MLX 0.32.4 from PyPI.\n\
             \n  Run once:   python3 scripts/setup-mlx.py            (CPU)\n\
             \n         or:  python3 scripts/setup-mlx.py --backend cuda   (NVIDIA GPU)\n\
             \n  then build again. See README.md, \"Building on Linux\".\n"
        );
        std::process::exit(1);
    }
}
