//! Order statistics the benchmarks print (shared by `bench` and
//! `bench_batch`, included with `#[path]`: not an example of its own).

/// The value at fraction `at` (0 to 1) of the sorted values, the nearest
/// rank; NaN for none.
pub fn percentile(values: &mut [f64], at: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() - 1) as f64 * at).round() as usize;
    values[rank.min(values.len() - 1)]
}

/// With `MLX_HARMONY_BENCH_STEPS=FILE`: one JSON line appended to FILE, each
/// decode step's whole time in ms in order, under `label` (whether slow
/// steps come every so many steps or in a run of their own, which the
/// percentiles cannot say).
pub fn write_steps(label: &str, steps_ms: &[f64]) -> std::io::Result<()> {
    use std::io::Write;
    let Some(path) = std::env::var_os("MLX_HARMONY_BENCH_STEPS").filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let steps: Vec<String> = steps_ms.iter().map(|s| format!("{s:.3}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(
        file,
        "{{\"impl\": \"{label}\", \"steps_ms\": [{}]}}",
        steps.join(", ")
    )
}
