//! `--device` semantics, whichever libmlx (CPU-only, CUDA or Metal) is loaded.

use mlx_harmony_core::device::{self, DeviceChoice, DeviceKind};

#[test]
fn choices_follow_what_mlx_offers() {
    let has_gpu = device::gpu_available();

    let cpu = device::select(DeviceChoice::Cpu).unwrap();
    assert_eq!(cpu.kind, DeviceKind::Cpu);
    // Where scripts/setup-mlx.py linked OpenBLAS, MLX's cblas_sgemm must
    // resolve to it (ahead of the reference BLAS libmlx.so brings).
    let config = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.cargo/config.toml"
    ))
    .unwrap_or_default();
    if config.contains("libopenblas") {
        assert!(
            device::cpu_blas().is_some(),
            "the set-up linked OpenBLAS, but MLX's cblas_sgemm does not resolve to it"
        );
    }
    // The CPU line names the optimized BLAS MLX's products run on, where
    // the process has one.
    match device::cpu_blas() {
        Some(blas) => {
            assert!(blas.starts_with("OpenBLAS "), "{blas}");
            assert_eq!(cpu.to_string(), format!("cpu (CPU, BLAS: {blas})"));
        }
        None => assert_eq!(cpu.to_string(), "cpu (CPU)"),
    }

    let auto = device::select(DeviceChoice::Auto).unwrap();
    if has_gpu {
        assert_eq!(auto.kind, DeviceKind::Gpu);
        assert!(["CUDA", "Metal"].contains(&auto.backend), "{auto}");
        assert_eq!(device::select(DeviceChoice::Gpu).unwrap(), auto);
    } else {
        assert_eq!(auto, cpu);
        let err = device::select(DeviceChoice::Gpu).unwrap_err().to_string();
        assert!(
            err.contains("no GPU back end") && err.contains("--device cpu"),
            "{err}"
        );
    }
    println!("gpu available: {has_gpu}; auto selects {auto}");
}
