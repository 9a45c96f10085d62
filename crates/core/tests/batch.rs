//! Continuous batching against one-by-one generation: greedy batched outputs
//! equal the single-sequence loop's token for token (float32 parity
//! checkpoints: a Llama, and GPT-OSS with its sliding windows of 8, sinks
//! and experts), with prompts of mixed lengths, sequences joining while
//! others decode, leaving early, stop strings and a cancelled row.

use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

use mlx_harmony_core::batch::{BatchEvent, BatchGenerator, SequenceId, SequenceRequest, StepEval};
use mlx_harmony_core::generate::{
    Cancel, FinishReason, GenerateOptions, Generation, LoadedModel, generate,
};
use mlx_harmony_core::sampling::{Sampler, SamplingSettings};

fn fixture(name: &str) -> PathBuf {
    mlx_harmony_testkit::parity_fixture(name)
}

fn greedy() -> Sampler {
    Sampler::new(SamplingSettings::default()).unwrap()
}

/// Prompts of very different lengths (a few tokens to several chunks of
/// the sliding window).
fn prompts(loaded: &LoadedModel) -> Vec<Vec<u32>> {
    [
        "Hi",
        "The quick brown fox jumps over the lazy dog.",
        "Once upon a time, in a land far away, there lived a king who had three daughters, \
         each more curious than the last, and a garden full of strange machines.",
        "1 2 3 4 5 6 7 8 9 10 11 12",
    ]
    .iter()
    .map(|text| loaded.encode(text).unwrap())
    .collect()
}

fn one_by_one(loaded: &LoadedModel, prompt: &[u32], options: &GenerateOptions) -> Generation {
    generate(loaded, prompt, &mut greedy(), options, |_, _| {}).unwrap()
}

/// Runs the batch until it is idle, adding `later[i]` after `at[i]` steps;
/// returns each sequence's generation and the text its token events carried.
fn run(
    batch: &mut BatchGenerator,
    later: Vec<(usize, SequenceRequest)>,
) -> HashMap<SequenceId, (Generation, String)> {
    let mut later: Vec<(usize, SequenceRequest)> = later;
    later.sort_by_key(|(at, _)| *at);
    let mut later = later.into_iter().peekable();
    let mut streamed: HashMap<SequenceId, String> = HashMap::new();
    let mut done = HashMap::new();
    let mut step = 0;
    loop {
        while later.peek().is_some_and(|(at, _)| *at <= step) {
            let (_, request) = later.next().unwrap();
            batch.add(request);
        }
        if batch.is_idle() && later.peek().is_none() {
            break;
        }
        for event in batch.step().unwrap() {
            match event {
                BatchEvent::Token { id, text, .. } => {
                    streamed.entry(id).or_default().push_str(&text)
                }
                BatchEvent::Finished { id, generation } => {
                    let text = streamed.remove(&id).unwrap_or_default();
                    done.insert(id, (generation, text));
                }
                BatchEvent::Failed { id, message } => panic!("sequence {id} failed: {message}"),
            }
        }
        step += 1;
        assert!(step < 10_000, "the batch never went idle");
    }
    done
}

fn request(prompt: &[u32], options: GenerateOptions) -> SequenceRequest {
    SequenceRequest {
        prompt: prompt.to_vec(),
        sampler: greedy(),
        options,
        cancel: Cancel::new(),
    }
}

/// A greedy request for each prompt, with its own limit of new tokens.
fn requests(prompts: &[Vec<u32>], limits: &[usize]) -> Vec<SequenceRequest> {
    prompts
        .iter()
        .zip(limits)
        .map(|(p, &n)| request(p, GenerateOptions::new(n)))
        .collect()
}

/// Each prompt generated alone, with its own limit of new tokens.
fn each_alone(loaded: &LoadedModel, prompts: &[Vec<u32>], limits: &[usize]) -> Vec<Generation> {
    prompts
        .iter()
        .zip(limits)
        .map(|(p, &n)| one_by_one(loaded, p, &GenerateOptions::new(n)))
        .collect()
}

/// Adds the first request now and request `i` after `at[i]` steps, runs
/// the batch until it is idle and returns the generations in order.
fn joining_late(
    batch: &mut BatchGenerator,
    requests: Vec<SequenceRequest>,
    at: &[usize],
) -> Vec<(Generation, String)> {
    let mut requests = requests.into_iter();
    let first = batch.add(requests.next().expect("a request"));
    let later = requests.enumerate().map(|(i, r)| (at[i + 1], r)).collect();
    let mut done = run(batch, later);
    (0..at.len())
        .map(|i| done.remove(&(first + i as SequenceId)).expect("finished"))
        .collect()
}

/// Each generation's tokens equal the expected one's.
fn assert_tokens(got: &[(Generation, String)], expected: &[Generation], what: &str) {
    assert_eq!(got.len(), expected.len());
    for (i, ((generation, _), expected)) in got.iter().zip(expected).enumerate() {
        assert_eq!(
            generation.tokens, expected.tokens,
            "{what}: sequence {i} differs"
        );
    }
}

fn batched_equals_one_by_one(model: &str) {
    let loaded = Rc::new(LoadedModel::load(&fixture(model)).unwrap());
    let prompts = prompts(&loaded);
    // Different lengths, so that rows leave at different steps.
    let limits = [12, 20, 7, 16];
    let expected = each_alone(&loaded, &prompts, &limits);

    // All at once.
    let mut batch = BatchGenerator::new(loaded.clone(), 8);
    let ids: Vec<SequenceId> = prompts
        .iter()
        .zip(limits)
        .map(|(p, n)| batch.add(request(p, GenerateOptions::new(n))))
        .collect();
    let done = run(&mut batch, Vec::new());
    for (i, id) in ids.iter().enumerate() {
        let (generation, streamed) = &done[id];
        assert_eq!(
            generation.tokens, expected[i].tokens,
            "{model}: sequence {i} differs when batched"
        );
        assert_eq!(generation.text, expected[i].text);
        assert_eq!(
            streamed, &generation.text,
            "the events carry the whole text"
        );
        assert_eq!(generation.finish_reason, expected[i].finish_reason);
        assert_eq!(generation.prompt_tokens, prompts[i].len());
    }

    // Joining while others decode (after 3, 5 and 9 steps).
    let mut batch = BatchGenerator::new(loaded.clone(), 8);
    let first = batch.add(request(&prompts[0], GenerateOptions::new(limits[0])));
    let later = (1..prompts.len())
        .map(|i| {
            (
                [0, 3, 5, 9][i],
                request(&prompts[i], GenerateOptions::new(limits[i])),
            )
        })
        .collect();
    let done = run(&mut batch, later);
    assert_eq!(done.len(), prompts.len());
    assert_eq!(done[&first].0.tokens, expected[0].tokens);
    for (i, expected) in expected.iter().enumerate().skip(1) {
        let id = first + i as SequenceId;
        assert_eq!(
            done[&id].0.tokens, expected.tokens,
            "{model}: sequence {i}, joining late, differs"
        );
    }
}

#[test]
fn batched_greedy_equals_one_by_one_on_llama() {
    batched_equals_one_by_one("llama");
}

#[test]
fn batched_greedy_equals_one_by_one_on_gpt_oss_with_sliding_windows() {
    batched_equals_one_by_one("gpt-oss");
}

/// Prompts queued together that each fit a chunk run in one forward pass
/// (padded on the right to the longest), and every one decodes as it does
/// alone: at the start, and joining while another row decodes; a prompt of
/// one token ends the group before it (the queue's order is kept); with
/// grouping off, none is grouped and the tokens are the same.
fn grouped_prompts_decode_as_alone(model: &str) {
    let loaded = Rc::new(LoadedModel::load(&fixture(model)).unwrap());
    let all = prompts(&loaded);
    // The three longer prompts, then the shortest: mixed lengths.
    let prompts: Vec<Vec<u32>> = vec![
        all[2].clone(),
        all[1].clone(),
        all[3].clone(),
        loaded.encode("A cat").unwrap(),
    ];
    assert!(
        prompts.iter().all(|p| p.len() >= 2),
        "{model}: prompts to group"
    );
    let limits = [9, 14, 6, 11];
    let expected = each_alone(&loaded, &prompts, &limits);
    for group in [true, false] {
        let mut batch = BatchGenerator::new(loaded.clone(), 8);
        batch.set_group_prompts(group);
        let got = joining_late(&mut batch, requests(&prompts, &limits), &[0, 0, 0, 0]);
        assert_tokens(
            &got,
            &expected,
            &format!("{model}, all at once, grouping {group}"),
        );
        assert_eq!(batch.grouped_prompts(), if group { 4 } else { 0 });
    }
    // The first decodes alone; the other three join together two steps on.
    let mut batch = BatchGenerator::new(loaded.clone(), 8);
    let got = joining_late(&mut batch, requests(&prompts, &limits), &[0, 2, 2, 2]);
    assert_tokens(&got, &expected, &format!("{model}, joining late"));
    assert_eq!(batch.grouped_prompts(), 3);
    // A one-token prompt first: run alone, and the group starts after it.
    let mut batch = BatchGenerator::new(loaded.clone(), 8);
    let mut with_one = vec![vec![prompts[0][0]]];
    with_one.extend(prompts.iter().take(3).cloned());
    let limits = [4, 9, 14, 6];
    let expected = each_alone(&loaded, &with_one, &limits);
    let got = joining_late(&mut batch, requests(&with_one, &limits), &[0, 0, 0, 0]);
    assert_tokens(
        &got,
        &expected,
        &format!("{model}, after a one-token prompt"),
    );
    assert_eq!(batch.grouped_prompts(), 3);
}

#[test]
fn grouped_prompts_decode_as_alone_on_llama() {
    grouped_prompts_decode_as_alone("llama");
}

#[test]
fn grouped_prompts_decode_as_alone_on_gpt_oss_with_sliding_windows() {
    grouped_prompts_decode_as_alone("gpt-oss");
}

/// A decode step that hands MLX its tokens alone (not the caches' arrays
/// too) decodes the same tokens: every array a step writes is an input of
/// its tokens, so nothing the next step reads is left unrun. Rows join
/// while others decode and leave at different limits.
fn steps_evaluating_their_tokens_alone_decode_the_same(model: &str) {
    let loaded = Rc::new(LoadedModel::load(&fixture(model)).unwrap());
    let prompts = prompts(&loaded);
    let limits = [12, 5, 9, 16];
    let expected = each_alone(&loaded, &prompts, &limits);
    for step_eval in [StepEval::Caches, StepEval::Tokens, StepEval::Auto] {
        let mut batch = BatchGenerator::new(loaded.clone(), 8);
        batch.set_step_eval(step_eval);
        let got = joining_late(&mut batch, requests(&prompts, &limits), &[0, 1, 3, 3]);
        assert_tokens(
            &got,
            &expected,
            &format!("{model}, steps evaluating {step_eval:?}"),
        );
    }
}

#[test]
fn steps_evaluating_their_tokens_alone_decode_the_same_on_llama() {
    steps_evaluating_their_tokens_alone_decode_the_same("llama");
}

#[test]
fn steps_evaluating_their_tokens_alone_decode_the_same_on_gpt_oss_with_sliding_windows() {
    steps_evaluating_their_tokens_alone_decode_the_same("gpt-oss");
}

/// Prompts that start with the same cached prefix (a system prompt every
/// client sends) run past it in one pass over the prefix's caches, copied
/// to each row, and each decodes as it does alone: a burst arriving with
/// the prompt that first carries the prefix (which runs alone and hands its
/// caches on), and, with the prefix cached, a queue in which another prompt
/// comes between (the queue's order is kept: the group stops before it).
fn prompts_after_a_cached_prefix_decode_as_alone(model: &str) {
    let loaded = Rc::new(LoadedModel::load(&fixture(model)).unwrap());
    let all = prompts(&loaded);
    let system: Vec<u32> = [all[2].clone(), all[1].clone()].concat();
    assert!(system.len() >= 32, "{model}: a prefix worth sharing");
    let with_system = |text: &str| [system.clone(), loaded.encode(text).unwrap()].concat();
    let first = with_system("Hello");
    let after: Vec<Vec<u32>> = ["A cat", "1 2 3 4 5 6", "Why is the sky blue?", "Zebras"]
        .iter()
        .map(|text| with_system(text))
        .collect();
    // What the first prompt hands on: all but its last token.
    let shared = |prompt: &[u32]| {
        let head = &first[..first.len() - 1];
        head.iter().zip(prompt).take_while(|(a, b)| a == b).count()
    };
    let base = shared(&after[0]);
    assert!(
        after
            .iter()
            .all(|p| shared(p) == base && p.len() > base + 1),
        "{model}: the prompts share the same prefix with the first"
    );

    let mut burst = vec![first.clone()];
    burst.extend(after.iter().cloned());
    let limits = [12, 9, 14, 6, 11];
    let expected = each_alone(&loaded, &burst, &limits);
    let mut batch = BatchGenerator::with_prompt_cache(loaded.clone(), 8, 64 << 20);
    let got = joining_late(&mut batch, requests(&burst, &limits), &[0; 5]);
    assert_tokens(
        &got,
        &expected,
        &format!("{model}, a burst after its prefix"),
    );
    assert_eq!(batch.grouped_prompts(), 4, "{model}");
    let cached: Vec<usize> = got.iter().map(|(g, _)| g.cached_tokens).collect();
    assert_eq!(cached, [0, base, base, base, base], "{model}");

    // The prefix cached; another prompt second in the queue.
    let mut queue = vec![after[0].clone(), all[1].clone()];
    queue.extend(after[1..3].iter().cloned());
    let limits = [7, 10, 8, 5];
    let expected = each_alone(&loaded, &queue, &limits);
    let mut batch = BatchGenerator::with_prompt_cache(loaded.clone(), 8, 64 << 20);
    let warm = batch.add(request(&first, GenerateOptions::new(3)));
    assert!(run(&mut batch, Vec::new()).contains_key(&warm));
    let got = joining_late(&mut batch, requests(&queue, &limits), &[0; 4]);
    assert_tokens(&got, &expected, &format!("{model}, another prompt between"));
    assert_eq!(
        batch.grouped_prompts(),
        2,
        "{model}: the last two, after the other prompt, grouped"
    );
    assert!(got[2].0.cached_tokens >= base && got[3].0.cached_tokens == got[2].0.cached_tokens);
}

#[test]
fn prompts_after_a_cached_prefix_decode_as_alone_on_llama() {
    prompts_after_a_cached_prefix_decode_as_alone("llama");
}

#[test]
fn prompts_after_a_cached_prefix_decode_as_alone_on_gpt_oss_with_sliding_windows() {
    prompts_after_a_cached_prefix_decode_as_alone("gpt-oss");
}

/// Requests that reach an idle batch together run in larger groups: eight
/// 300-token prompts (2 400 tokens, over a decoding step's 2 048) all join
/// in the first step, where a step with the decoding budget leaves one
/// waiting; the tokens are each prompt's alone either way.
#[test]
fn an_idle_batch_runs_more_prompt_tokens_in_a_step() {
    let loaded = Rc::new(LoadedModel::load(&fixture("llama")).unwrap());
    let vocab = loaded.model.vocab_size() as u64;
    let prompts: Vec<Vec<u32>> = (0..8)
        .map(|seed| {
            let mut rng = mlx_harmony_core::demo::SplitMix64::new(seed);
            (0..300).map(|_| (rng.next_u64() % vocab) as u32).collect()
        })
        .collect();
    let limits = [5, 3, 6, 4, 5, 3, 6, 4];
    let expected = each_alone(&loaded, &prompts, &limits);
    for idle in [true, false] {
        let mut batch = BatchGenerator::new(loaded.clone(), 8);
        batch.set_idle_prefill(idle);
        let ids: Vec<SequenceId> = requests(&prompts, &limits)
            .into_iter()
            .map(|r| batch.add(r))
            .collect();
        let mut done = HashMap::new();
        let mut first = true;
        while !batch.is_idle() {
            for event in batch.step().unwrap() {
                if let BatchEvent::Finished { id, generation } = event {
                    done.insert(id, generation);
                }
            }
            if first {
                let waiting = if idle { 0 } else { 1 };
                assert_eq!(
                    (batch.waiting(), batch.active()),
                    (waiting, 8 - waiting),
                    "after the first step, idle budget {idle}"
                );
                first = false;
            }
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                done[id].tokens, expected[i].tokens,
                "prompt {i}, idle budget {idle}"
            );
        }
    }
}

/// A prompt that joins a batch with no row decoding gets its first token
/// back from that step, before its first decode step is queued (queueing it
/// would only hold the token back); a prompt that joins while others decode
/// does not hold them back: that step decodes them too.
#[test]
fn a_first_token_comes_back_before_the_first_decode_step() {
    let loaded = Rc::new(LoadedModel::load(&fixture("llama")).unwrap());
    let prompts = prompts(&loaded);
    let mut batch = BatchGenerator::new(loaded.clone(), 4);
    let first = batch.add(request(&prompts[0], GenerateOptions::new(6)));
    let events = batch.step().unwrap();
    assert!(
        matches!(events.as_slice(), [BatchEvent::Token { id, .. }] if *id == first),
        "the first step of an idle batch gives the first token: {} events",
        events.len()
    );
    assert_eq!(batch.decode_timing().steps, 0, "no decode step yet");
    // The next step decodes it; one that then takes a new prompt decodes
    // the running row in the same step.
    batch.step().unwrap();
    assert_eq!(batch.decode_timing().steps, 1);
    let second = batch.add(request(&prompts[1], GenerateOptions::new(6)));
    let events = batch.step().unwrap();
    assert_eq!(batch.decode_timing().steps, 2, "the running row decoded");
    let ids: Vec<SequenceId> = events
        .iter()
        .filter_map(|e| match e {
            BatchEvent::Token { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(
        ids,
        [second, first],
        "the joiner's first token, then the running row's"
    );
    // And the outputs are the ones generated alone.
    let mut done = HashMap::new();
    while !batch.is_idle() {
        for event in batch.step().unwrap() {
            if let BatchEvent::Finished { id, generation } = event {
                done.insert(id, generation);
            }
        }
    }
    let expected = each_alone(&loaded, &prompts[..2], &[6, 6]);
    assert_eq!(done[&first].tokens, expected[0].tokens);
    assert_eq!(done[&second].tokens, expected[1].tokens);
}

/// The step that reads every row's last token (each ending by its limit)
/// queues no forward pass past it, as the single-sequence loop stops: N
/// tokens take N - 1 decode steps (the first comes from the prompt pass),
/// and the row's cache, kept by the prompt cache, holds what was fed: the
/// prompt and all but the last token.
#[test]
fn no_decode_step_is_queued_past_the_last_tokens() {
    let loaded = Rc::new(LoadedModel::load(&fixture("llama")).unwrap());
    let prompts = prompts(&loaded);
    let limit = 5;
    let mut batch = BatchGenerator::with_prompt_cache(loaded.clone(), 4, 64 << 20);
    let alone = run(
        &mut batch,
        vec![(0, request(&prompts[1], GenerateOptions::new(limit)))],
    );
    assert_eq!(batch.decode_timing().steps, limit - 1);
    let (generation, _) = alone.values().next().unwrap();
    let expected = each_alone(&loaded, &prompts[1..2], &[limit]);
    assert_eq!(generation.tokens, expected[0].tokens);
    assert_eq!(generation.finish_reason, FinishReason::Length);

    // The conversation goes on: the cached part is what was fed.
    let mut follow = prompts[1].clone();
    follow.extend(&generation.tokens);
    follow.extend(&prompts[3]);
    let got = run(
        &mut batch,
        vec![(0, request(&follow, GenerateOptions::new(4)))],
    );
    let (next, _) = got.values().next().unwrap();
    assert_eq!(next.cached_tokens, prompts[1].len() + limit - 1);
    assert_eq!(
        next.tokens,
        each_alone(&loaded, &[follow.clone()], &[4])[0].tokens
    );

    // Two rows that end on the same step: no step after it either.
    let mut batch = BatchGenerator::new(loaded.clone(), 4);
    let both = run(
        &mut batch,
        vec![
            (0, request(&prompts[0], GenerateOptions::new(limit))),
            (0, request(&prompts[3], GenerateOptions::new(limit))),
        ],
    );
    assert_eq!(both.len(), 2);
    assert_eq!(batch.decode_timing().steps, limit - 1);
}

/// Long enough that a batch cache's recent columns fill and move into its
/// store more than once while rows decode (run with
/// `MLX_HARMONY_ATTEND=emulate`, as scripts/test does, on a machine without
/// CUDA), with a row joining mid-way and one leaving early.
#[test]
fn a_long_batched_decode_equals_one_by_one() {
    for model in ["llama", "gpt-oss"] {
        let loaded = Rc::new(LoadedModel::load(&fixture(model)).unwrap());
        let prompts = prompts(&loaded);
        let limits = [75, 30, 50];
        let expected = each_alone(&loaded, &prompts, &limits);
        let mut batch = BatchGenerator::new(loaded.clone(), 8);
        let first = batch.add(request(&prompts[0], GenerateOptions::new(limits[0])));
        let later = vec![
            (0, request(&prompts[1], GenerateOptions::new(limits[1]))),
            (40, request(&prompts[2], GenerateOptions::new(limits[2]))),
        ];
        let done = run(&mut batch, later);
        for (i, expected) in expected.iter().enumerate() {
            let id = first + i as SequenceId;
            assert_eq!(
                done[&id].0.tokens, expected.tokens,
                "{model}: sequence {i} of a long batch differs"
            );
        }
    }
}

#[test]
fn more_sequences_than_rows_wait_their_turn() {
    let loaded = Rc::new(LoadedModel::load(&fixture("llama")).unwrap());
    let prompts = prompts(&loaded);
    let expected: Vec<Generation> = prompts
        .iter()
        .map(|p| one_by_one(&loaded, p, &GenerateOptions::new(6)))
        .collect();
    let mut batch = BatchGenerator::new(loaded.clone(), 2);
    let ids: Vec<SequenceId> = prompts
        .iter()
        .map(|p| batch.add(request(p, GenerateOptions::new(6))))
        .collect();
    let mut most = 0;
    let mut done = HashMap::new();
    while !batch.is_idle() {
        for event in batch.step().unwrap() {
            if let BatchEvent::Finished { id, generation } = event {
                done.insert(id, generation);
            }
        }
        most = most.max(batch.active());
    }
    assert_eq!(most, 2, "at most two rows decode at once");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(done[id].tokens, expected[i].tokens);
    }
}

#[test]
fn stop_strings_and_cancellation_end_one_row_only() {
    let loaded = Rc::new(LoadedModel::load(&fixture("llama")).unwrap());
    let prompts = prompts(&loaded);
    let reference = one_by_one(&loaded, &prompts[1], &GenerateOptions::new(20));
    // A stop string from the middle of the reference text.
    let chars: Vec<char> = reference.text.chars().collect();
    assert!(chars.len() > 10, "{:?}", reference.text);
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
    let options = GenerateOptions::new(20).with_stop(std::slice::from_ref(&stop));
    let stopped_alone = one_by_one(&loaded, &prompts[1], &options);
    assert_eq!(stopped_alone.finish_reason, FinishReason::StopString);

    let mut batch = BatchGenerator::new(loaded.clone(), 8);
    let stopped = batch.add(request(&prompts[1], options));
    let cancel = Cancel::new();
    let cancelled = batch.add(SequenceRequest {
        cancel: cancel.clone(),
        ..request(&prompts[2], GenerateOptions::new(50))
    });
    let full = batch.add(request(&prompts[0], GenerateOptions::new(20)));
    let mut done = HashMap::new();
    let mut steps = 0;
    while !batch.is_idle() {
        for event in batch.step().unwrap() {
            if let BatchEvent::Finished { id, generation } = event {
                done.insert(id, generation);
            }
        }
        steps += 1;
        if steps == 6 {
            cancel.cancel();
        }
    }
    assert_eq!(done[&stopped].text, stopped_alone.text);
    assert_eq!(done[&stopped].finish_reason, FinishReason::StopString);
    assert!(!done[&stopped].text.contains(&stop));
    assert_eq!(done[&cancelled].finish_reason, FinishReason::Cancelled);
    assert!(done[&cancelled].tokens.len() < 50);
    assert_eq!(
        done[&full].tokens,
        one_by_one(&loaded, &prompts[0], &GenerateOptions::new(20)).tokens
    );
}

#[test]
fn a_prompt_that_starts_like_a_finished_one_reuses_its_cache() {
    for model in ["llama", "gpt-oss"] {
        let loaded = Rc::new(LoadedModel::load(&fixture(model)).unwrap());
        let prompts = prompts(&loaded);
        let mut batch = BatchGenerator::with_prompt_cache(loaded.clone(), 4, 64 << 20);
        let first = batch.add(request(&prompts[2], GenerateOptions::new(8)));
        let done = run(&mut batch, Vec::new());
        assert_eq!(done[&first].0.cached_tokens, 0);
        let (entries, bytes) = batch.prompt_cache_usage();
        assert!(
            entries == 1 && bytes > 0,
            "{entries} entries, {bytes} bytes"
        );

        // The same prompt again: all but its last token come from the cache.
        let again = batch.add(request(&prompts[2], GenerateOptions::new(8)));
        // The conversation going on: the first answer and a new question.
        let mut longer = prompts[2].clone();
        longer.extend(&done[&first].0.tokens);
        longer.extend(&prompts[1]);
        let next_turn = batch.add(request(&longer, GenerateOptions::new(8)));
        let done_again = run(&mut batch, Vec::new());
        assert_eq!(
            done_again[&again].0.cached_tokens,
            prompts[2].len() - 1,
            "{model}"
        );
        assert!(
            done_again[&next_turn].0.cached_tokens >= prompts[2].len(),
            "{model}"
        );
        assert_eq!(
            done_again[&again].0.tokens,
            one_by_one(&loaded, &prompts[2], &GenerateOptions::new(8)).tokens,
            "{model}: the cache changed the answer"
        );
        assert_eq!(
            done_again[&next_turn].0.tokens,
            one_by_one(&loaded, &longer, &GenerateOptions::new(8)).tokens,
            "{model}: the cache changed the next turn's answer"
        );
    }
}

#[test]
fn sequences_queued_together_with_one_prompt_run_it_once() {
    // The choices of an `n > 1` request, and a client whose prompt extends
    // theirs, all queued before the first step.
    for model in ["llama", "gpt-oss"] {
        let loaded = Rc::new(LoadedModel::load(&fixture(model)).unwrap());
        let prompts = prompts(&loaded);
        let mut batch = BatchGenerator::with_prompt_cache(loaded.clone(), 4, 64 << 20);
        let shared = &prompts[2];
        let choices: Vec<SequenceId> = (0..3)
            .map(|_| batch.add(request(shared, GenerateOptions::new(6))))
            .collect();
        let mut extended = shared.clone();
        extended.extend(&prompts[1]);
        let extension = batch.add(request(&extended, GenerateOptions::new(6)));
        let done = run(&mut batch, Vec::new());
        let cached: Vec<usize> = choices.iter().map(|id| done[id].0.cached_tokens).collect();
        assert_eq!(
            cached,
            vec![0, shared.len() - 1, shared.len() - 1],
            "{model}: the first choice runs the prompt, the others find it"
        );
        assert_eq!(
            done[&extension].0.cached_tokens,
            shared.len() - 1,
            "{model}"
        );
        let expected = one_by_one(&loaded, shared, &GenerateOptions::new(6)).tokens;
        for id in &choices {
            assert_eq!(
                done[id].0.tokens, expected,
                "{model}: sharing changed an answer"
            );
        }
        assert_eq!(
            done[&extension].0.tokens,
            one_by_one(&loaded, &extended, &GenerateOptions::new(6)).tokens,
            "{model}"
        );
    }
}

#[test]
fn a_saved_prompt_cache_serves_a_new_scheduler() {
    let loaded = Rc::new(LoadedModel::load(&fixture("llama")).unwrap());
    let prompts = prompts(&loaded);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prompts.safetensors");
    let mut first = BatchGenerator::with_prompt_cache(loaded.clone(), 4, 64 << 20);
    first.add(request(&prompts[2], GenerateOptions::new(8)));
    run(&mut first, Vec::new());
    assert_eq!(first.save_prompt_cache(&file, "tiny-llama").unwrap(), 1);

    // Another model's name is refused, and nothing is loaded.
    let mut other = BatchGenerator::with_prompt_cache(loaded.clone(), 4, 64 << 20);
    let refused = other.load_prompt_cache(&file, "another").unwrap_err();
    assert!(refused.to_string().contains("saved for model"), "{refused}");
    assert_eq!(other.prompt_cache_usage().0, 0);

    // A new scheduler (a restarted server) finds the prompt.
    let mut second = BatchGenerator::with_prompt_cache(loaded.clone(), 4, 64 << 20);
    assert_eq!(second.load_prompt_cache(&file, "tiny-llama").unwrap(), 1);
    let again = second.add(request(&prompts[2], GenerateOptions::new(8)));
    let done = run(&mut second, Vec::new());
    assert_eq!(done[&again].0.cached_tokens, prompts[2].len() - 1);
    assert_eq!(
        done[&again].0.tokens,
        one_by_one(&loaded, &prompts[2], &GenerateOptions::new(8)).tokens,
        "the loaded cache changed the answer"
    );
    std::fs::write(&file, b"not safetensors").unwrap();
    assert!(second.load_prompt_cache(&file, "tiny-llama").is_err());
}

#[test]
fn seeded_sampling_draws_the_same_tokens_batched() {
    let loaded = Rc::new(LoadedModel::load(&fixture("llama")).unwrap());
    let prompts = prompts(&loaded);
    let sampler = |seed| {
        Sampler::new(SamplingSettings {
            temperature: 0.9,
            top_p: 0.95,
            seed: Some(seed),
            ..SamplingSettings::default()
        })
        .unwrap()
    };
    let options = GenerateOptions::new(12);
    let mut batch = BatchGenerator::new(loaded.clone(), 8);
    let ids: Vec<SequenceId> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            batch.add(SequenceRequest {
                sampler: sampler(i as u64),
                ..request(p, options.clone())
            })
        })
        .collect();
    let done = run(&mut batch, Vec::new());
    for (i, id) in ids.iter().enumerate() {
        let alone = generate(
            &loaded,
            &prompts[i],
            &mut sampler(i as u64),
            &options,
            |_, _| {},
        )
        .unwrap();
        assert_eq!(done[id].0.tokens, alone.tokens, "sequence {i}");
    }
}

#[test]
fn a_bounded_batch_decodes_past_its_bound_as_one_bounded_sequence_does() {
    // `--max-kv-size` in a batch: each row sees its first positions and its
    // newest, as the single-sequence rotating cache; rows join at different
    // steps (different left padding), one prompt is longer than the bound,
    // and two rows run long enough for the dropped columns to be cut away.
    let max = 24;
    let loaded = Rc::new(LoadedModel::load(&fixture("llama")).unwrap());
    let prompts = prompts(&loaded);
    assert!(prompts[2].len() > max as usize, "one prompt past the bound");
    let limits = [300, 40, 320, 10];
    let mut single = mlx_harmony_core::generate::TokenGenerator::load(&fixture("llama")).unwrap();
    single.set_max_kv_size(Some(max)).unwrap();
    let expected: Vec<Generation> = prompts
        .iter()
        .zip(limits)
        .map(|(p, n)| {
            single.clear_cache();
            single
                .generate(p, &mut greedy(), &GenerateOptions::new(n), |_, _| {})
                .unwrap()
        })
        .collect();
    let unbounded = one_by_one(&loaded, &prompts[0], &GenerateOptions::new(limits[0]));
    assert_ne!(
        unbounded.tokens, expected[0].tokens,
        "the bound changes what the model sees"
    );

    let mut batch = BatchGenerator::new(loaded.clone(), 8);
    batch.set_max_kv_size(Some(max)).unwrap();
    let requests = (0..prompts.len())
        .map(|i| request(&prompts[i], GenerateOptions::new(limits[i])))
        .collect();
    let got = joining_late(&mut batch, requests, &[0, 5, 30, 200]);
    assert_tokens(&got, &expected, "bounded, joining late");
    assert!(batch.set_max_kv_size(None).is_ok(), "idle again");
}

#[test]
fn a_bounded_batch_keeps_its_bound_after_it_empties_with_or_without_a_prompt_cache() {
    // As the server runs it: requests one after another (the batch empties
    // between them), then together, the prompt cache on and off.
    let loaded = Rc::new(LoadedModel::load(&fixture("llama")).unwrap());
    let prompts: Vec<Vec<u32>> = [
        "Once upon a time",
        "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18",
        "Hi",
    ]
    .iter()
    .map(|t| loaded.encode(t).unwrap())
    .collect();
    let mut single = mlx_harmony_core::generate::TokenGenerator::load(&fixture("llama")).unwrap();
    single.set_max_kv_size(Some(16)).unwrap();
    let expected: Vec<Generation> = prompts
        .iter()
        .map(|p| {
            single.clear_cache();
            single
                .generate(p, &mut greedy(), &GenerateOptions::new(300), |_, _| {})
                .unwrap()
        })
        .collect();
    for cache_bytes in [0usize, 1 << 30] {
        let mut batch = BatchGenerator::with_prompt_cache(loaded.clone(), 4, cache_bytes);
        batch.set_max_kv_size(Some(16)).unwrap();
        for (i, p) in prompts.iter().enumerate() {
            let id = batch.add(request(p, GenerateOptions::new(300)));
            let done = run(&mut batch, vec![]);
            assert_eq!(
                done[&id].0.tokens, expected[i].tokens,
                "alone {i} bytes {cache_bytes}"
            );
        }
        let ids: Vec<_> = prompts
            .iter()
            .map(|p| batch.add(request(p, GenerateOptions::new(300))))
            .collect();
        let done = run(&mut batch, vec![]);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                done[id].0.tokens, expected[i].tokens,
                "together {i} bytes {cache_bytes}"
            );
        }
    }
}

#[test]
fn prompt_lookup_in_the_batch_keeps_greedy_output_and_drafts_while_a_row_is_alone() {
    // The random model falls into loops, which prompt lookup drafts well.
    let loaded = Rc::new(LoadedModel::load(&fixture("llama")).unwrap());
    let prompts = prompts(&loaded);
    let limits = [60, 20, 80, 16];
    let expected: Vec<Generation> = prompts
        .iter()
        .zip(limits)
        .map(|(p, n)| one_by_one(&loaded, p, &GenerateOptions::new(n)))
        .collect();
    let with_lookup = |n: usize| {
        let mut options = GenerateOptions::new(n);
        options.prompt_lookup = 6;
        options
    };
    // Alone, one after another: every step after the first checks a draft.
    let mut batch = BatchGenerator::new(loaded.clone(), 8);
    for (i, prompt) in prompts.iter().enumerate() {
        let id = batch.add(request(prompt, with_lookup(limits[i])));
        let done = run(&mut batch, Vec::new());
        let (generation, streamed) = &done[&id];
        assert_eq!(generation.tokens, expected[i].tokens, "sequence {i} alone");
        assert_eq!(streamed, &generation.text);
        assert_eq!(generation.text, expected[i].text);
        assert!(
            generation.speculative_steps > 0,
            "sequence {i}: no check ran"
        );
        assert!(
            generation.speculative_steps < generation.tokens.len(),
            "sequence {i}: no draft was kept ({} checks for {} tokens)",
            generation.speculative_steps,
            generation.tokens.len()
        );
    }
    // Together, joining late: batched steps while others decode, checks
    // once a row is left alone, back to batched steps when one joins.
    let mut batch = BatchGenerator::new(loaded.clone(), 8);
    let requests = (0..prompts.len())
        .map(|i| request(&prompts[i], with_lookup(limits[i])))
        .collect();
    let got = joining_late(&mut batch, requests, &[0, 2, 25, 70]);
    assert_tokens(&got, &expected, "prompt lookup, joining late");
    assert!(got.iter().any(|(g, _)| g.speculative_steps > 0));
}

#[test]
fn a_draft_model_in_the_batch_keeps_greedy_output() {
    // The model drafts for itself, so every draft must be kept (the draft
    // lines up with the row's text): alone, each step checks its draft;
    // joining late, batched steps in between.
    let loaded = Rc::new(LoadedModel::load(&fixture("llama")).unwrap());
    let draft_model = loaded.clone();
    let prompts = prompts(&loaded);
    let limits = [40, 20, 50, 16];
    let expected: Vec<Generation> = prompts
        .iter()
        .zip(limits)
        .map(|(p, n)| one_by_one(&loaded, p, &GenerateOptions::new(n)))
        .collect();
    let mut batch = BatchGenerator::new(loaded.clone(), 8);
    batch.set_draft_model(Some(
        mlx_harmony_core::draft::DraftModel::new(draft_model, &loaded, 4).unwrap(),
    ));
    for (i, prompt) in prompts.iter().enumerate() {
        let id = batch.add(request(prompt, GenerateOptions::new(limits[i])));
        let done = run(&mut batch, Vec::new());
        let generation = &done[&id].0;
        assert_eq!(generation.tokens, expected[i].tokens, "sequence {i} alone");
        assert!(
            generation.drafted_tokens > 0,
            "sequence {i}: nothing drafted"
        );
        assert_eq!(
            generation.accepted_draft_tokens, generation.drafted_tokens,
            "sequence {i}: a draft of the model itself was rejected"
        );
    }
    let requests = (0..prompts.len())
        .map(|i| request(&prompts[i], GenerateOptions::new(limits[i])))
        .collect();
    let got = joining_late(&mut batch, requests, &[0, 2, 20, 45]);
    assert_tokens(&got, &expected, "draft model, joining late");
    assert!(batch.take_draft_model().is_some());
}

#[test]
fn a_quantized_batch_decodes_as_one_quantized_sequence_does() {
    // `--kv-bits` in a batch: prompts run in quantized caches, rows join
    // packed (or the batch packs once it holds `start` columns), and each
    // row's tokens are those of one sequence with the same cache.
    use mlx_harmony_core::models::cache::KvQuantization;
    // Its head size (32) takes the group size 32.
    const MODEL: &str = "qwen3";
    let loaded = Rc::new(LoadedModel::load(&fixture(MODEL)).unwrap());
    let prompts = prompts(&loaded);
    let limits = [30, 20, 36, 16];
    for (bits, start) in [(4, 0), (8, 0), (4, 24)] {
        let settings = KvQuantization::new(bits, 32).unwrap().starting_at(start);
        let mut single = mlx_harmony_core::generate::TokenGenerator::load(&fixture(MODEL)).unwrap();
        single.set_kv_quantization(Some(settings)).unwrap();
        let expected: Vec<Generation> = prompts
            .iter()
            .zip(limits)
            .map(|(p, n)| {
                single.clear_cache();
                single
                    .generate(p, &mut greedy(), &GenerateOptions::new(n), |_, _| {})
                    .unwrap()
            })
            .collect();
        let mut batch = BatchGenerator::with_prompt_cache(loaded.clone(), 8, 1 << 30);
        batch.set_kv_quantization(Some(settings)).unwrap();
        assert!(batch.set_max_kv_size(Some(64)).is_err(), "not both");
        // Alone (the batch empties in between): packed when the row's own
        // columns reach `start`, as the single sequence's cache.
        for (i, expected) in expected.iter().enumerate() {
            let id = batch.add(request(&prompts[i], GenerateOptions::new(limits[i])));
            let done = run(&mut batch, Vec::new());
            assert_eq!(
                done[&id].0.tokens, expected.tokens,
                "{bits} bits from {start}: sequence {i} alone differs from one quantized sequence"
            );
        }
        if start > 0 {
            // Together, the batch packs once its widest row reaches `start`:
            // a shorter row is packed sooner than alone.
            continue;
        }
        let requests = (0..prompts.len())
            .map(|i| request(&prompts[i], GenerateOptions::new(limits[i])))
            .collect();
        let got = joining_late(&mut batch, requests, &[0, 3, 9, 12]);
        assert_tokens(&got, &expected, &format!("{bits} bits, joining late"));
    }
    // The comparison means something: 4 bits change some answer here.
    let mut single = mlx_harmony_core::generate::TokenGenerator::load(&fixture(MODEL)).unwrap();
    single
        .set_kv_quantization(Some(KvQuantization::new(4, 32).unwrap()))
        .unwrap();
    let changed = prompts.iter().zip(limits).any(|(p, n)| {
        single.clear_cache();
        let options = GenerateOptions::new(n);
        let quantized = single
            .generate(p, &mut greedy(), &options, |_, _| {})
            .unwrap();
        one_by_one(&loaded, p, &options).tokens != quantized.tokens
    });
    assert!(
        changed,
        "4 bits changed no answer: the test compares nothing"
    );
}
