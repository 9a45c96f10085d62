//! The decode-step attention kernel (`attend_rows`, CUDA only) against its
//! reference, and the reference against MLX's own attention: every dtype,
//! head size and query heads a kv head it takes at their edges, with and
//! without sinks, 2–64 rows, rows starting in the store or in the recent
//! part, the recent part empty, partly used and full. On a machine without
//! CUDA only the reference is checked; `scripts/gpu-qmm` runs the rest on
//! the H200.

use mlx_harmony_core::attend_rows::{self, Spans, Step};
use mlx_rs::fast::{ScaledDotProductAttentionMask, scaled_dot_product_attention};
use mlx_rs::{Array, Dtype, Stream, ops};

fn cuda() -> bool {
    let mut cuda = false;
    // SAFETY: plain out-parameter call.
    let status = unsafe { mlx_sys::mlx_cuda_is_available(&mut cuda) };
    status == 0 && cuda && mlx_harmony_core::device::gpu_available()
}

fn columns(a: &Array, from: i32, to: i32) -> Array {
    let shape = a.shape();
    mlx_harmony_core::array_ext::slice(a, &[0, 0, from, 0], &[shape[0], shape[1], to, shape[3]])
        .unwrap()
}

#[test]
fn the_reference_is_mlx_attention_over_the_joined_columns() {
    for sinks in [false, true] {
        for (group, head_dim) in [(1, 64), (4, 128)] {
            let (q, store, recent, spans, sink_logits) =
                attend_rows::example(Dtype::Float32, 3, 2, group, head_dim, 6, 5).unwrap();
            let sinks = sinks.then_some(&sink_logits);
            let exact = attend_rows::reference(&Step {
                queries: &q,
                store: [&store[0], &store[1]],
                recent: [&recent[0], &recent[1]],
                spans: &spans,
                scale: 0.125,
                sinks,
            })
            .unwrap();
            let joined = |i: usize| {
                ops::concatenate(
                    &[
                        columns(&store[i], 0, spans.store_end),
                        columns(&recent[i], 0, spans.total - spans.store_end),
                    ],
                    2,
                )
                .unwrap()
            };
            let allowed: Vec<bool> = spans
                .begins
                .iter()
                .flat_map(|&b| (0..spans.total).map(move |j| j >= b))
                .collect();
            let mask = Array::from_slice(&allowed, &[3, 1, 1, spans.total]);
            let theirs = scaled_dot_product_attention(
                &q,
                joined(0),
                joined(1),
                0.125,
                Some(ScaledDotProductAttentionMask::Array(&mask)),
                sinks,
            )
            .unwrap();
            let (diff, scale) = attend_rows::difference(&theirs, &exact).unwrap();
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "sinks {}, group {group}, D {head_dim}: {diff} from MLX's attention",
                sinks.is_some()
            );
        }
    }
}

#[test]
fn the_kernel_claims_only_shapes_it_handles() {
    let q = |shape: &[i32], dtype: Dtype| ops::zeros_dtype(shape, dtype).unwrap();
    assert!(attend_rows::takes(&q(&[4, 32, 1, 128], Dtype::Bfloat16), 8));
    assert!(attend_rows::takes(&q(&[4, 64, 1, 64], Dtype::Float16), 8));
    // Two queries a row, float32, head sizes it was not built for, more
    // query heads a kv head than its registers hold, heads not grouped.
    assert!(!attend_rows::takes(
        &q(&[4, 32, 2, 128], Dtype::Bfloat16),
        8
    ));
    assert!(!attend_rows::takes(&q(&[4, 32, 1, 128], Dtype::Float32), 8));
    assert!(!attend_rows::takes(&q(&[4, 32, 1, 96], Dtype::Bfloat16), 8));
    assert!(!attend_rows::takes(
        &q(&[4, 32, 1, 128], Dtype::Bfloat16),
        2
    ));
    assert!(!attend_rows::takes(
        &q(&[4, 30, 1, 128], Dtype::Bfloat16),
        8
    ));
}

#[test]
fn the_kernel_matches_the_reference() {
    if !cuda() {
        eprintln!("no CUDA device: the attend_rows kernel is not run here");
        return;
    }
    let stream = Stream::new();
    let mut cases = 0;
    for dtype in [Dtype::Bfloat16, Dtype::Float16] {
        for (group, head_dim) in [(1, 64), (8, 64), (16, 64), (1, 128), (4, 128), (8, 128)] {
            for sinks in [false, true] {
                for (rows, recent) in [(2, 0), (5, 1), (16, 17), (64, 32)] {
                    let (q, store, recent_parts, spans, sink_logits) = attend_rows::example(
                        dtype,
                        rows,
                        2,
                        group,
                        head_dim,
                        recent,
                        (rows + recent) as u64,
                    )
                    .unwrap();
                    let sinks = sinks.then_some(&sink_logits);
                    let store = [&store[0], &store[1]];
                    let recent_parts = [&recent_parts[0], &recent_parts[1]];
                    let scale = (head_dim as f32).powf(-0.5);
                    let step = Step {
                        queries: &q,
                        store,
                        recent: recent_parts,
                        spans: &spans,
                        scale,
                        sinks,
                    };
                    let ours = attend_rows::attend(&step, &stream).unwrap();
                    let exact = attend_rows::reference(&step).unwrap();
                    let (diff, magnitude) = attend_rows::difference(&ours, &exact).unwrap();
                    assert!(
                        diff <= attend_rows::allowance(dtype, magnitude),
                        "{dtype:?}, group {group}, D {head_dim}, sinks {}, {rows} rows, \
                         {recent} recent: {diff} from the reference at scale {magnitude}",
                        sinks.is_some()
                    );
                    cases += 1;
                }
            }
        }
    }
    eprintln!("{cases} cases match");
}

#[test]
fn a_row_may_start_anywhere_and_spans_must_fit() {
    if !cuda() {
        return;
    }
    let stream = Stream::new();
    let (q, store, recent, spans, _) =
        attend_rows::example(Dtype::Bfloat16, 4, 2, 4, 128, 9, 3).unwrap();
    let store = [&store[0], &store[1]];
    let recent = [&recent[0], &recent[1]];
    // Every row sees only the newest column, or starts at the store's
    // first column, or in the recent part.
    for begins in [
        vec![spans.total - 1; 4],
        vec![0; 4],
        vec![spans.store_end, spans.store_end + 3, 0, spans.total - 1],
    ] {
        let spans = Spans {
            begins,
            ..spans.clone()
        };
        let step = Step {
            queries: &q,
            store,
            recent,
            spans: &spans,
            scale: 0.1,
            sinks: None,
        };
        let ours = attend_rows::attend(&step, &stream).unwrap();
        let exact = attend_rows::reference(&step).unwrap();
        let (diff, magnitude) = attend_rows::difference(&ours, &exact).unwrap();
        assert!(diff <= attend_rows::allowance(Dtype::Bfloat16, magnitude));
    }
    // A row starting past the end, or more recent columns than the part holds.
    for bad in [
        Spans {
            begins: vec![spans.total; 4],
            ..spans.clone()
        },
        Spans {
            total: spans.store_end + attend_rows::RECENT_COLUMNS + 1,
            ..spans.clone()
        },
    ] {
        let step = Step {
            queries: &q,
            store,
            recent,
            spans: &bad,
            scale: 0.1,
            sinks: None,
        };
        assert!(attend_rows::attend(&step, &stream).is_err());
    }
}
