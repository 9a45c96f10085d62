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
