//! Batched steps on real (synthetic) weights: a model cut in two shards as
//! the planner cuts SmolLM2 (the first embeds, the last predicts with the
//! head tied to the embedding), in every weight format the shards run.
//! What a batch must keep: each call's output bit for bit what the call
//! gets alone, whoever shares its batch and wherever its rows sit in it,
//! and one call's error failing that call alone.

use edgeinfer_engine::decoder::format::{
    Config, Header, Layer, Matrix, Part, Rope, RopeStyle, Weights, MAGIC,
};
use edgeinfer_engine::decoder::{best, PREDICT_ROWS};
use edgeinfer_engine::kernels::panels::Panels;
use edgeinfer_engine::packed::{leak_aligned, Packer};

use crate::shard::{Begun, Call, Input, Output, Ran, Shard, ShardError, BATCH_ROWS, HOLD, MERGE};

/// Weights as the shards have them: every matrix in one format, or the
/// GGUF's mix (4-bit layers, an 8-bit embedding and tied head).
#[derive(Debug, Clone, Copy)]
enum Format {
    F32,
    Q8,
    Q4_1Layers,
}

const FORMATS: [Format; 3] = [Format::F32, Format::Q8, Format::Q4_1Layers];

/// A deterministic pseudo-random stream in [-1, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }

    fn byte(&mut self) -> u8 {
        ((self.next() + 1.0) * 127.9) as u8
    }
}

fn config() -> Config {
    Config {
        vocab: 96,
        dims: 64,
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        ffn: 128,
        context: 64,
        norm_eps: 1e-5,
        rope: Rope {
            theta: 10000.0,
            style: RopeStyle::HalfSplit,
        },
    }
}

/// f16 bits of a normal `v`, rounded toward zero.
fn f16_bits(v: f32) -> u16 {
    let b = v.to_bits();
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    ((b >> 16) & 0x8000) as u16 | ((exp as u16) << 10) | ((b >> 13) & 0x3ff) as u16
}

fn matrix(p: &mut Packer, r: &mut Lcg, rows: usize, cols: usize, q4: bool, f: Format) -> Matrix {
    let weights = match (f, q4) {
        (Format::F32, _) => Weights::F32 {
            values: p.push_f32(&r.vec(rows * cols, 0.3)),
        },
        (Format::Q4_1Layers, true) => {
            let mut gguf = Vec::new();
            for _ in 0..rows * cols / 32 {
                let d = f16_bits(0.01 + 0.01 * r.next().abs());
                let m = f16_bits(-0.08 - 0.02 * r.next().abs());
                gguf.extend(d.to_le_bytes());
                gguf.extend(m.to_le_bytes());
                gguf.extend((0..16).map(|_| r.byte()));
            }
            let panels = Panels::pack_q4_1(&gguf, rows, cols).unwrap();
            Weights::Q4_1Panels {
                panels: p.push(&panels, panels.len()),
            }
        }
        _ => {
            let q: Vec<i8> = (0..rows * cols).map(|_| (r.next() * 127.0) as i8).collect();
            let scales: Vec<f32> = (0..rows * cols / 32)
                .map(|_| 0.002 + 0.002 * r.next().abs())
                .collect();
            let panels = Panels::pack_q8(&q, &scales, rows, cols);
            Weights::Q8Panels {
                panels: p.push(&panels, panels.len()),
            }
        }
    };
    Matrix {
        rows,
        cols,
        weights,
    }
}

/// Two shards of a 3-layer model in format `f`: layer 0 after the
/// embedding, then layers 1-2 with the final norm and the tied head.
fn shards(f: Format, budget: usize) -> [Shard; 2] {
    let c = config();
    let mut r = Lcg(f as u64 + 5);
    let mut p = Packer::default();
    let (d, qd, kvd) = (c.dims, c.heads * c.head_dim, c.kv_heads * c.head_dim);
    let embedding = matrix(&mut p, &mut r, c.vocab, d, false, f);
    let mut layers = Vec::new();
    for _ in 0..3 {
        let norm = |r: &mut Lcg| r.vec(d, 0.3).iter().map(|v| v + 1.0).collect::<Vec<_>>();
        let attention_norm = p.push_f32(&norm(&mut r));
        let mlp_norm = p.push_f32(&norm(&mut r));
        layers.push(Layer {
            attention_norm,
            q: matrix(&mut p, &mut r, qd, d, true, f),
            k: matrix(&mut p, &mut r, kvd, d, true, f),
            v: matrix(&mut p, &mut r, kvd, d, true, f),
            o: matrix(&mut p, &mut r, d, qd, true, f),
            mlp_norm,
            gate: matrix(&mut p, &mut r, c.ffn, d, true, f),
            up: matrix(&mut p, &mut r, c.ffn, d, true, f),
            down: matrix(&mut p, &mut r, d, c.ffn, true, f),
            q_bias: None,
            k_bias: None,
            v_bias: None,
        });
    }
    let final_norm = p.push_f32(&r.vec(d, 0.3).iter().map(|v| v + 1.0).collect::<Vec<_>>());
    let part = |first: usize, end: usize| Header {
        config: c,
        part: Part {
            model_layers: 3,
            first_layer: first,
            end_layer: end,
            embeds: first == 0,
            predicts: end == 3,
        },
        embedding: Some(embedding.clone()),
        layers: layers[first..end].to_vec(),
        final_norm: (end == 3).then_some(final_norm),
        head: None,
        rope_factors: None,
    };
    [part(0, 1), part(1, 3)].map(|header| {
        let bytes = leak_aligned(&p.clone().finish(MAGIC, &header).unwrap());
        let mut s = Shard::new(budget, 1);
        s.load(bytes).unwrap();
        s
    })
}

fn open(s: &mut Shard, tokens: usize) -> u32 {
    match s.begin(tokens, "", &[], 0) {
        Ok(Begun::Admitted(o)) => o.handle,
        other => panic!("not admitted: {other:?}"),
    }
}

/// A call that feeds token ids.
fn tokens(handle: u32, at: usize, ids: &[u32]) -> Call<'_> {
    Call {
        handle,
        at,
        input: Input::Tokens(ids),
        best: 0,
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn argmax(v: &[f32]) -> u32 {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap() as u32
}

/// Runs `calls` on `s` as one batch: every call must run now.
fn outputs(s: &mut Shard, calls: &[Call]) -> Vec<Result<Output, ShardError>> {
    s.step_batch(calls, 0)
        .ran
        .into_iter()
        .map(|r| r.expect("ran now"))
        .collect()
}

/// [`outputs`] where no call asks for candidates: floats.
fn batch(s: &mut Shard, calls: &[Call]) -> Vec<Result<Vec<f32>, ShardError>> {
    outputs(s, calls)
        .into_iter()
        .map(|r| {
            r.map(|out| match out {
                Output::Floats(v) => v,
                Output::Best(_) => panic!("candidates nobody asked for"),
            })
        })
        .collect()
}

/// Four conversations through both shards, each round one batch per
/// shard against each call stepped alone on shards of its own: prompts of
/// 5, 1, 9 and 3 tokens prefilled together; then greedy decoding, with the
/// third conversation's prompt coming only in round 2 (a prefill beside
/// single decode rows) and the first batched in a different place every
/// round. Every output, hidden states and logits, bit for bit; calls that
/// ask the last shard for their best logits (every other one, from the
/// second round on) get exactly the best of the row they get alone, and
/// the first shard ignores the ask.
#[test]
fn a_batch_gives_every_call_the_bits_it_gets_alone() {
    for f in FORMATS {
        let [mut a0, mut a1] = shards(f, 400);
        let [mut b0, mut b1] = shards(f, 400);
        let prompts: [Vec<u32>; 4] = [
            vec![3, 9, 1, 40, 7],
            vec![11],
            vec![2, 4, 6, 8, 10, 12, 14, 16, 18],
            vec![95, 0, 50],
        ];
        let handles: Vec<[u32; 2]> = (0..4)
            .map(|_| {
                let h = [open(&mut a0, 40), open(&mut a1, 40)];
                assert_eq!(h, [open(&mut b0, 40), open(&mut b1, 40)]);
                h
            })
            .collect();
        let mut fed = [0usize; 4];
        let mut next: Vec<Option<Vec<u32>>> = prompts.iter().cloned().map(Some).collect();
        for round in 0..6 {
            // Who talks this round, rotated so batch places change.
            let mut talking: Vec<usize> = (0..4)
                .filter(|&i| i != 2 || round >= 2)
                .filter(|&i| next[i].is_some())
                .collect();
            let turn = round % talking.len();
            talking.rotate_left(turn);
            let ids: Vec<Vec<u32>> = talking.iter().map(|&i| next[i].clone().unwrap()).collect();
            let asks = |i: usize| match round > 0 && (i + round) % 2 == 0 {
                true => 1 + 19 * i,
                false => 0,
            };
            let calls: Vec<Call> = talking
                .iter()
                .zip(&ids)
                .map(|(&i, t)| Call {
                    best: asks(i),
                    ..tokens(handles[i][0], fed[i], t)
                })
                .collect();
            let hidden = batch(&mut b0, &calls);
            let calls: Vec<Call> = talking
                .iter()
                .zip(&hidden)
                .map(|(&i, h)| Call {
                    handle: handles[i][1],
                    at: fed[i],
                    input: Input::Hidden(h.as_ref().unwrap()),
                    best: asks(i),
                })
                .collect();
            let logits = outputs(&mut b1, &calls);
            for (k, &i) in talking.iter().enumerate() {
                let t = &ids[k];
                let alone = a0.step(handles[i][0], fed[i], Input::Tokens(t), 0).unwrap();
                let hidden = hidden[k].as_ref().unwrap();
                assert_eq!(bits(hidden), bits(&alone), "{f:?} round {round} #{i}");
                let alone = a1
                    .step(handles[i][1], fed[i], Input::Hidden(&alone), 0)
                    .unwrap();
                assert_eq!(alone.len(), config().vocab);
                assert!(alone.iter().all(|v| v.is_finite()), "{f:?}");
                assert!(alone.iter().any(|&v| v != alone[0]), "{f:?}");
                match logits[k].as_ref().unwrap() {
                    Output::Floats(logits) => {
                        assert_eq!(asks(i), 0);
                        assert_eq!(bits(logits), bits(&alone), "{f:?} round {round} #{i}");
                    }
                    Output::Best(top) => {
                        let want = best(&alone, asks(i));
                        assert_eq!(top.len(), asks(i).min(config().vocab));
                        let pairs = |c: &[(u32, f32)]| -> Vec<(u32, u32)> {
                            c.iter().map(|&(id, l)| (id, l.to_bits())).collect()
                        };
                        assert_eq!(pairs(top), pairs(&want), "{f:?} round {round} #{i}");
                    }
                }
                fed[i] += t.len();
                next[i] = Some(vec![argmax(&alone)]);
            }
        }
        let info = b1.info().unwrap();
        assert_eq!(
            (info.stages, info.batched_stages, info.max_batch),
            (6, 6, 4),
            "{f:?}"
        );
        assert_eq!(info.batched_calls, 3 + 3 + 4 * 4, "{f:?}");
        assert_eq!(a1.info().unwrap().batched_stages, 0);
    }
}

/// In one batch: a pass never opened, a closed one, one fed at the wrong
/// position, one past its reservation, one given an id outside the
/// vocabulary, and the other kind of input. Each fails with its own
/// error; the two good calls get their bits, and every failed pass that
/// is open goes on as if it had not been called.
#[test]
fn one_calls_error_fails_it_alone() {
    for f in FORMATS {
        let [mut alone, _] = shards(f, 400);
        let [mut s, _] = shards(f, 400);
        let good = [open(&mut s, 10), open(&mut s, 10)];
        let wrong_at = open(&mut s, 10);
        let small = open(&mut s, 2);
        let bad_id = open(&mut s, 10);
        let hidden_in = open(&mut s, 10);
        let closed = open(&mut s, 10);
        s.close(closed, None, 0);
        let want: Vec<Vec<f32>> = [[1u32, 2, 3], [4, 5, 6]]
            .iter()
            .map(|t| {
                let h = open(&mut alone, 10);
                alone.step(h, 0, Input::Tokens(t), 0).unwrap()
            })
            .collect();
        let rows = vec![0.5f32; config().dims];
        let calls = [
            tokens(999, 0, &[1]),
            tokens(good[0], 0, &[1, 2, 3]),
            tokens(closed, 0, &[1]),
            tokens(wrong_at, 1, &[1]),
            tokens(small, 0, &[1, 2, 3]),
            tokens(bad_id, 0, &[7, 500]),
            Call {
                handle: hidden_in,
                at: 0,
                input: Input::Hidden(&rows),
                best: 0,
            },
            tokens(good[1], 0, &[4, 5, 6]),
        ];
        let got = batch(&mut s, &calls);
        assert_eq!(got[0], Err(ShardError::NoPass(999)));
        assert_eq!(got[2], Err(ShardError::NoPass(closed)));
        assert_eq!(got[3], Err(ShardError::Position { at: 1, held: 0 }));
        assert!(matches!(got[4], Err(ShardError::OverReservation { .. })));
        assert!(matches!(got[5], Err(ShardError::Decoder(_))));
        assert!(matches!(got[6], Err(ShardError::Decoder(_))));
        assert_eq!(bits(got[1].as_ref().unwrap()), bits(&want[0]), "{f:?}");
        assert_eq!(bits(got[7].as_ref().unwrap()), bits(&want[1]), "{f:?}");
        // The failed passes still start at 0 and run as a fresh one does.
        for h in [wrong_at, small, bad_id, hidden_in] {
            let out = s.step(h, 0, Input::Tokens(&[1, 2]), 0).unwrap();
            let fresh = open(&mut alone, 10);
            let want = alone.step(fresh, 0, Input::Tokens(&[1, 2]), 0).unwrap();
            assert_eq!(bits(&out), bits(&want), "{f:?} pass {h}");
        }
    }
}

/// What runs together: calls in the order given while their rows fit
/// `BATCH_ROWS` (or the first call's rows, when more) and no pass has two
/// calls; the rest wait their turn (`None`), and a failed call takes no
/// room. A long prompt first runs alone.
#[test]
fn a_batch_runs_a_prefix_of_bounded_rows_one_call_per_pass() {
    let [mut s, _] = shards(Format::Q8, 400);
    let context = config().context;
    let [a, b, c] = [
        open(&mut s, context),
        open(&mut s, context),
        open(&mut s, 8),
    ];
    let long: Vec<u32> = (0..BATCH_ROWS as u32 - 2).map(|t| t % 90).collect();
    let ran = s
        .step_batch(
            &[
                tokens(a, 0, &long),
                // Fails (never opened): takes no room.
                tokens(77, 0, &[1, 2, 3, 4]),
                tokens(c, 0, &[1, 2]),
                // The context is full: this and all after wait.
                tokens(b, 0, &[1]),
                tokens(c, 2, &[1]),
            ],
            0,
        )
        .ran;
    let state = |r: &Ran| match r {
        Some(Ok(_)) => "ran",
        Some(Err(_)) => "failed",
        None => "later",
    };
    assert_eq!(
        ran.iter().map(state).collect::<Vec<_>>(),
        ["ran", "failed", "ran", "later", "later"]
    );
    // One call per pass: the second of c waits for the first.
    let ran = s
        .step_batch(
            &[
                tokens(b, 0, &[1]),
                tokens(c, 2, &[1]),
                tokens(c, 3, &[1]),
                tokens(a, BATCH_ROWS - 2, &[1]),
            ],
            0,
        )
        .ran;
    assert_eq!(
        ran.iter().map(state).collect::<Vec<_>>(),
        ["ran", "ran", "later", "later"]
    );
    let info = s.info().unwrap();
    assert_eq!(
        (
            info.stages,
            info.batched_stages,
            info.batched_calls,
            info.max_batch
        ),
        (2, 2, 4, 2)
    );
    // A prompt longer than BATCH_ROWS runs, alone (c, done, is not
    // waited for).
    s.close(c, None, 0);
    let prompt: Vec<u32> = (0..BATCH_ROWS as u32 + 5).map(|t| t % 90).collect();
    let first = tokens(b, 1, &prompt);
    let next = tokens(a, BATCH_ROWS - 2, &[1]);
    let ran = s.step_batch(&[first, next], 0).ran;
    assert_eq!(ran.iter().map(state).collect::<Vec<_>>(), ["ran", "later"]);
    assert_eq!(s.info().unwrap().stages, 3);
    assert!(context > BATCH_ROWS + 6);
}

/// Past the first shard, calls wait for the passes that ran with them in
/// the last stage, `HOLD` ms per such pass at most from the first ask: a
/// pair that ran together runs together again even if its calls come
/// apart; one that does not come in time is left behind and not waited
/// for until it calls; a pass that ended is not waited for, and a
/// conversation alone is never held.
#[test]
fn calls_wait_a_little_for_the_passes_they_ran_with() {
    let [_, mut s] = shards(Format::Q8, 400);
    let [a, b] = [open(&mut s, 40), open(&mut s, 40)];
    let row = vec![0.25f32; config().dims];
    let call = |handle, at| Call {
        handle,
        at,
        input: Input::Hidden(&row),
        best: 0,
    };
    let ran = |batch: &crate::shard::Batch| batch.ran.iter().filter(|r| r.is_some()).count();
    // Alone: never held.
    let alone = s.step_batch(&[call(a, 0)], 100);
    assert_eq!((ran(&alone), alone.hold), (1, None));
    let alone = s.step_batch(&[call(a, 1)], 101);
    assert_eq!((ran(&alone), alone.hold), (1, None));
    // b's first call waits for a, which ran last, and a comes.
    let held = s.step_batch(&[call(b, 0)], 102);
    assert_eq!((ran(&held), held.hold), (0, Some(HOLD)));
    let held = s.step_batch(&[call(b, 0)], 104);
    assert_eq!((ran(&held), held.hold), (0, Some(HOLD - 2)));
    let both = s.step_batch(&[call(b, 0), call(a, 2)], 105);
    assert_eq!((ran(&both), both.hold), (2, None));
    // Apart again: a waits for b (two in step: twice the hold), b comes.
    assert_eq!(s.step_batch(&[call(a, 3)], 200).hold, Some(2 * HOLD));
    assert_eq!(ran(&s.step_batch(&[call(a, 3), call(b, 1)], 205)), 2);
    // b does not come in time: a runs alone, and is not held for b next
    // time; b, behind, waits for a, and they run together again.
    assert_eq!(s.step_batch(&[call(a, 4)], 300).hold, Some(2 * HOLD));
    let late = s.step_batch(&[call(a, 4)], 300 + 2 * HOLD);
    assert_eq!((ran(&late), late.hold), (1, None));
    assert_eq!(s.step_batch(&[call(b, 2)], 310).hold, Some(HOLD));
    assert_eq!(ran(&s.step_batch(&[call(b, 2), call(a, 5)], 311)), 2);
    // A pass that ends is not waited for.
    s.close(a, None, 322);
    let last = s.step_batch(&[call(b, 3)], 330);
    assert_eq!((ran(&last), last.hold), (1, None));
    let info = s.info().unwrap();
    assert_eq!(
        (info.stages, info.batched_stages, info.max_batch),
        (7, 3, 2)
    );
    assert_eq!((info.holds, info.hold_timeouts), (5, 1));
}

/// The first shard merges groups: a pass is in step when it ran in one of
/// the last `n` stages (`n` the passes fed), and the hold is `MERGE`
/// times longer, so a group waits there for one a whole trip behind it.
#[test]
fn the_first_shard_merges_groups_that_take_turns() {
    let [mut s, _] = shards(Format::Q8, 400);
    let [a, b, c] = [open(&mut s, 40), open(&mut s, 40), open(&mut s, 40)];
    let call = |handle, at| tokens(handle, at, &[5]);
    let ran = |batch: &crate::shard::Batch| batch.ran.iter().filter(|r| r.is_some()).count();
    let merge = MERGE * HOLD;
    assert_eq!(ran(&s.step_batch(&[call(a, 0), call(b, 0)], 0)), 2);
    // c, new, waits for the pair, which comes a trip later.
    assert_eq!(s.step_batch(&[call(c, 0)], 1).hold, Some(2 * merge));
    assert_eq!(s.step_batch(&[call(c, 0)], 30).hold, Some(2 * merge - 29));
    let all = s.step_batch(&[call(c, 0), call(a, 1), call(b, 1)], 40);
    assert_eq!((ran(&all), all.hold), (3, None));
    // Together they stay: the pair waits for c.
    assert_eq!(
        s.step_batch(&[call(a, 2), call(b, 2)], 100).hold,
        Some(3 * merge)
    );
    assert_eq!(
        ran(&s.step_batch(&[call(a, 2), call(b, 2), call(c, 1)], 150)),
        3
    );
    // c does not come in time: the pair goes on without it and is not
    // held for it again; c, when it comes, waits for the pair and merges.
    assert_eq!(
        s.step_batch(&[call(a, 3), call(b, 3)], 200).hold,
        Some(3 * merge)
    );
    assert_eq!(
        ran(&s.step_batch(&[call(a, 3), call(b, 3)], 200 + 3 * merge)),
        2
    );
    assert_eq!(ran(&s.step_batch(&[call(a, 4), call(b, 4)], 300)), 2);
    assert_eq!(s.step_batch(&[call(c, 2)], 310).hold, Some(2 * merge));
    assert_eq!(
        ran(&s.step_batch(&[call(c, 2), call(a, 5), call(b, 5)], 350)),
        3
    );
    let info = s.info().unwrap();
    assert_eq!((info.stages, info.hold_timeouts, info.max_batch), (6, 1, 3));
}

/// With no hold (`BATCH_HOLD_MS=0`), calls run as they come: only calls
/// asked together share a stage.
#[test]
fn no_hold_runs_calls_as_they_come() {
    let [mut s, _] = shards(Format::Q8, 400);
    s.set_hold(0);
    let [a, b] = [open(&mut s, 40), open(&mut s, 40)];
    let call = |handle, at| tokens(handle, at, &[5]);
    assert!(s.step_batch(&[call(a, 0), call(b, 0)], 0).hold.is_none());
    let alone = s.step_batch(&[call(a, 1)], 1);
    assert!(alone.hold.is_none() && alone.ran[0].as_ref().is_some_and(Result::is_ok));
    let info = s.info().unwrap();
    assert_eq!((info.stages, info.batched_stages, info.holds), (2, 1, 0));
}

/// The last shard runs at most `PREDICT_ROWS` calls in one batch (each
/// holds its rows of logits, what the plan counts); the first shard of the
/// same model takes them all, and the rest run in the next batch, first.
#[test]
fn the_last_shard_batches_at_most_predict_rows_calls() {
    let [mut first, mut last] = shards(Format::Q8, 2_000);
    // No holding for the passes that ran: the rest run when asked.
    last.set_hold(0);
    let n = PREDICT_ROWS + 3;
    let handles: Vec<[u32; 2]> = (0..n)
        .map(|_| [open(&mut first, 4), open(&mut last, 4)])
        .collect();
    let calls: Vec<Call> = handles.iter().map(|h| tokens(h[0], 0, &[5])).collect();
    let hidden = batch(&mut first, &calls);
    assert_eq!(hidden.len(), n);
    let calls: Vec<Call> = handles
        .iter()
        .zip(&hidden)
        .map(|(h, x)| Call {
            handle: h[1],
            at: 0,
            input: Input::Hidden(x.as_ref().unwrap()),
            best: 1,
        })
        .collect();
    let ran = last.step_batch(&calls, 0).ran;
    let count = |ran: &[Ran]| ran.iter().filter(|r| matches!(r, Some(Ok(_)))).count();
    assert_eq!(count(&ran), PREDICT_ROWS);
    assert!(ran[PREDICT_ROWS..].iter().all(Option::is_none));
    let rest = last.step_batch(&calls[PREDICT_ROWS..], 0).ran;
    assert_eq!(count(&rest), 3);
}
