//! `GET /metrics`: the server's counters in Prometheus' text format —
//! requests by outcome, tokens in and out, prompt-cache hits, time to first
//! token and per-token latency histograms, active and waiting requests —
//! and [`Stats`], the counters the model thread keeps for it and `/health`.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use mlx_harmony_core::generate::Generation;

/// Counters for `/health` and the tests.
#[derive(Default)]
pub struct Stats {
    pub generating: AtomicBool,
    /// Sequences decoding now.
    pub active: AtomicUsize,
    pub completed: AtomicU64,
    /// Requests whose client went away (skipped in the queue or stopped mid-way).
    pub cancelled: AtomicU64,
    pub waiting: AtomicUsize,
    pub shutting_down: AtomicBool,
    /// What `/metrics` shows.
    pub metrics: Metrics,
}

/// Fixed buckets (upper bounds in seconds), counted as Prometheus does:
/// each bucket counts every observation at or below its bound.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// In microseconds, to keep it an integer counter.
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, seconds: f64) {
        if !seconds.is_finite() || seconds < 0.0 {
            return;
        }
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            if seconds <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

const FIRST_TOKEN_BOUNDS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const TOKEN_BOUNDS: &[f64] = &[0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0];

/// What the model thread records about the generations it finished.
pub struct Metrics {
    pub failed: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub cached_prompt_tokens: AtomicU64,
    /// Requests that took some of their prompt from the prompt cache.
    pub prompt_cache_hits: AtomicU64,
    pub first_token: Histogram,
    pub per_token: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            failed: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            cached_prompt_tokens: AtomicU64::new(0),
            prompt_cache_hits: AtomicU64::new(0),
            first_token: Histogram::new(FIRST_TOKEN_BOUNDS),
            per_token: Histogram::new(TOKEN_BOUNDS),
        }
    }
}

impl Metrics {
    /// One finished generation: its tokens and timings.
    pub fn record(&self, generation: &Generation) {
        self.prompt_tokens
            .fetch_add(generation.prompt_tokens as u64, Ordering::Relaxed);
        self.generated_tokens
            .fetch_add(generation.tokens.len() as u64, Ordering::Relaxed);
        if generation.cached_tokens > 0 {
            self.cached_prompt_tokens
                .fetch_add(generation.cached_tokens as u64, Ordering::Relaxed);
            self.prompt_cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        if !generation.tokens.is_empty() {
            self.first_token
                .observe(generation.time_to_first_token_seconds);
        }
        if generation.decode_tokens_per_second > 0.0 {
            self.per_token
                .observe(1.0 / generation.decode_tokens_per_second);
        }
    }
}

/// The whole page.
pub fn render(stats: &Stats) -> String {
    let m = &stats.metrics;
    let mut out = String::new();
    let counter = |out: &mut String, name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    };
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP mlx_harmony_requests_total Requests answered, by outcome.\n\
         # TYPE mlx_harmony_requests_total counter"
    );
    for (status, value) in [
        ("completed", load(&stats.completed)),
        ("cancelled", load(&stats.cancelled)),
        ("failed", load(&m.failed)),
    ] {
        let _ = writeln!(
            out,
            "mlx_harmony_requests_total{{status=\"{status}\"}} {value}"
        );
    }
    counter(
        &mut out,
        "mlx_harmony_prompt_tokens_total",
        "Prompt tokens of finished generations.",
        load(&m.prompt_tokens),
    );
    counter(
        &mut out,
        "mlx_harmony_generated_tokens_total",
        "Tokens generated.",
        load(&m.generated_tokens),
    );
    counter(
        &mut out,
        "mlx_harmony_cached_prompt_tokens_total",
        "Prompt tokens taken from the prompt cache instead of run again.",
        load(&m.cached_prompt_tokens),
    );
    counter(
        &mut out,
        "mlx_harmony_prompt_cache_hits_total",
        "Generations that took part of their prompt from the prompt cache.",
        load(&m.prompt_cache_hits),
    );
    m.first_token.render(
        "mlx_harmony_time_to_first_token_seconds",
        "From a generation's start (its request taken from the queue) to its first token.",
        &mut out,
    );
    m.per_token.render(
        "mlx_harmony_time_per_output_token_seconds",
        "Mean time between a generation's tokens after the first.",
        &mut out,
    );
    for (name, help, value) in [
        (
            "mlx_harmony_active_sequences",
            "Requests decoding now.",
            stats.active.load(Ordering::SeqCst),
        ),
        (
            "mlx_harmony_waiting_requests",
            "Requests in the queue.",
            stats.waiting.load(Ordering::SeqCst),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    out
}
