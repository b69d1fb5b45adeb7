//! Picking the next token from the logits: greedy, or sampled with
//! temperature, top-k and nucleus (top-p) filtering, after a repetition
//! penalty. Seeded, so a request with a `seed` gets the same text every time.

use edgeinfer_engine::decoder::{best, Candidate, MOST_BEST};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// Sampling settings of one generation, as validated by the API layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (always the most likely token).
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability sums to `top_p`.
    pub top_p: f32,
    /// CTRL-style penalty (> 1 discourages tokens already in the sequence):
    /// a positive logit is divided by it, a negative one multiplied.
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

/// A seeded sampler; one per generation. Its buffers are reused from token
/// to token: a step allocates nothing.
pub struct Sampler {
    params: SamplingParams,
    // ChaCha8 rather than rand's StdRng: its stream is fixed by the
    // algorithm, so a seed gives the same text across dependency updates.
    rng: ChaCha8Rng,
    /// Candidate token ids, best first once ranked.
    order: Vec<u32>,
    /// Tokens already penalized this step (cleared after it).
    penalized: Vec<bool>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        Sampler {
            params,
            rng: ChaCha8Rng::seed_from_u64(params.seed),
            order: Vec::new(),
            penalized: Vec::new(),
        }
    }

    /// The next token. `seen` are the tokens the repetition penalty applies to
    /// (the prompt and what was generated so far). `logits` is scratch space.
    ///
    /// Candidates are ranked by decreasing logit (ties: lower id first, as
    /// argmax); top-k keeps the first k, top-p the shortest prefix whose
    /// probability reaches p, and the draw walks the kept ones in rank order.
    /// Only what the filters can keep is ranked: the k best are picked in
    /// one pass ([`best`], the function the last shard of a sharded model
    /// runs, so [`Sampler::pick_best`] on its candidates draws the same
    /// token), a nucleus alone is searched in a growing prefix, and with
    /// neither filter the draw itself walks a growing ranked prefix (the
    /// whole vocabulary's mass summed in id order), so a step costs
    /// O(vocabulary) and never sorts the whole vocabulary.
    pub fn pick(&mut self, logits: &mut [f32], seen: &[u32]) -> u32 {
        let p = self.params;
        if p.repetition_penalty != 1.0 {
            self.penalize(logits, seen);
        }
        let vocab = logits.len();
        if p.temperature <= 0.0 || vocab < 2 {
            return argmax(logits);
        }
        if p.top_k > 0 && p.top_k < vocab {
            return self.draw(&best(logits, p.top_k));
        }
        let max = logits[argmax(logits) as usize];
        let weight = |t: u32| f64::from((logits[t as usize] - max) / p.temperature).exp();
        let by_rank = |a: &u32, b: &u32| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        };
        let order = &mut self.order;
        order.clear();
        order.extend(0..vocab as u32);
        let total: f64 = order.iter().map(|&t| weight(t)).sum();
        if p.top_p < 1.0 {
            let target = f64::from(p.top_p) * total;
            let keep = first_rank_where(order, vocab, by_rank, weight, |mass| mass >= target) + 1;
            let kept: f64 = order[..keep].iter().map(|&t| weight(t)).sum();
            let u = uniform(&mut self.rng) * kept;
            let mut mass = 0.0;
            for &t in &order[..keep] {
                mass += weight(t);
                if u < mass {
                    return t;
                }
            }
            return order[keep - 1];
        }
        // No filter: the whole vocabulary is kept, its mass is `total`,
        // and the draw walks only as far down the ranking as it must (a
        // growing ranked prefix), instead of sorting every token.
        let u = uniform(&mut self.rng) * total;
        let drawn = first_rank_where(order, vocab, by_rank, weight, |mass| u < mass);
        order[drawn]
    }

    /// How many of a step's best logits the draw can see, when it needs
    /// fewer than all: the one best when greedy, the `top_k` best under a
    /// top-k filter of at most [`MOST_BEST`] (top-p then works within
    /// them). `None` when it needs them all: no top-k, or a repetition
    /// penalty (it moves seen tokens up or down from anywhere in the
    /// ranking). A host whose model runs elsewhere asks for just these
    /// ([`Logits::Best`]) and calls [`Sampler::pick_best`].
    pub fn needs_best(&self) -> Option<usize> {
        let p = self.params;
        if p.repetition_penalty != 1.0 {
            return None;
        }
        if p.temperature <= 0.0 {
            return Some(1);
        }
        (p.top_k > 0 && p.top_k <= MOST_BEST).then_some(p.top_k)
    }

    /// The next token from a step's best candidates, best first as
    /// [`best`] ranks them, at least as many as [`Sampler::needs_best`]
    /// said: the token [`Sampler::pick`] draws from the full logits, with
    /// the same random numbers.
    pub fn pick_best(&mut self, top: &[Candidate]) -> u32 {
        let p = self.params;
        let Some(&(first, _)) = top.first() else {
            return 0;
        };
        if p.temperature <= 0.0 {
            return first;
        }
        let k = match p.top_k {
            0 => top.len(),
            k => k.min(top.len()),
        };
        self.draw(&top[..k])
    }

    /// Draws from `top` (the top-k, best first): top-p keeps its shortest
    /// prefix whose probability reaches p, and the draw walks the kept ones
    /// in rank order.
    fn draw(&mut self, top: &[Candidate]) -> u32 {
        let p = self.params;
        let max = top[0].1;
        let weight = |logit: f32| f64::from((logit - max) / p.temperature).exp();
        let keep = if p.top_p < 1.0 {
            let total: f64 = top.iter().map(|c| weight(c.1)).sum();
            let target = f64::from(p.top_p) * total;
            let mut mass = 0.0;
            top.iter()
                .position(|c| {
                    mass += weight(c.1);
                    mass >= target
                })
                .map_or(top.len(), |i| i + 1)
        } else {
            top.len()
        };
        let kept: f64 = top[..keep].iter().map(|c| weight(c.1)).sum();
        let u = uniform(&mut self.rng) * kept;
        let mut mass = 0.0;
        for &(t, logit) in &top[..keep] {
            mass += weight(logit);
            if u < mass {
                return t;
            }
        }
        top[keep - 1].0
    }

    /// CTRL's penalty, once per distinct seen token.
    fn penalize(&mut self, logits: &mut [f32], seen: &[u32]) {
        let penalty = self.params.repetition_penalty;
        self.penalized.resize(logits.len(), false);
        for &t in seen {
            let t = t as usize;
            if t < logits.len() && !self.penalized[t] {
                self.penalized[t] = true;
                let l = &mut logits[t];
                *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
            }
        }
        for &t in seen {
            if let Some(done) = self.penalized.get_mut(t as usize) {
                *done = false;
            }
        }
    }
}

/// Index of the largest logit; the lowest index among equals (as
/// `torch.argmax`, which the golden references used): the best of
/// [`best`]'s ranking, which the last shard of a sharded model sends.
pub fn argmax(logits: &[f32]) -> u32 {
    best(logits, 1).first().map_or(0, |c| c.0)
}

/// A uniform f64 in [0, 1) from 53 random bits.
fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A step's logits as a model's host hands them over: the whole row, or the
/// best candidates ([`Sampler::needs_best`]) from shards that ranked them
/// where the logits were made.
#[derive(Debug, Clone, PartialEq)]
pub enum Logits {
    All(Vec<f32>),
    Best(Vec<Candidate>),
}

impl Default for Logits {
    fn default() -> Self {
        Logits::All(Vec::new())
    }
}

/// The first rank, among `order`'s best `k` by `by_rank`, at which the mass
/// summed down the ranking makes `reached` true (`k - 1` if none does).
/// Only a growing prefix of the ranking is sorted (64 candidates, then four
/// times more), since the answer almost always lies near the top.
fn first_rank_where(
    order: &mut [u32],
    k: usize,
    by_rank: impl Fn(&u32, &u32) -> std::cmp::Ordering + Copy,
    weight: impl Fn(u32) -> f64,
    reached: impl Fn(f64) -> bool,
) -> usize {
    let mut m = k.min(64);
    loop {
        if m < k {
            order.select_nth_unstable_by(m - 1, by_rank);
        }
        order[..m].sort_unstable_by(by_rank);
        let mut mass = 0.0;
        if let Some(i) = order[..m].iter().position(|&t| {
            mass += weight(t);
            reached(mass)
        }) {
            return i;
        }
        if m == k {
            return k - 1;
        }
        m = (m * 4).min(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            repetition_penalty: 1.0,
            seed,
        }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(params(0.0, 0, 1.0, 1));
        assert_eq!(s.pick(&mut [0.5, 2.0, 2.0, -1.0], &[]), 1);
    }

    #[test]
    fn repetition_penalty_moves_greedy_off_a_seen_token() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            repetition_penalty: 2.0,
            ..SamplingParams::default()
        });
        // 3.0 / 2 = 1.5 < 2.0; the negative logit of token 2 gets worse, not better.
        assert_eq!(s.pick(&mut [3.0, 2.0, -1.0], &[0, 2]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_whatever_the_seed() {
        for seed in 0..50 {
            let mut s = Sampler::new(params(1.5, 1, 1.0, seed));
            assert_eq!(s.pick(&mut [0.1, 0.3, 0.2], &[]), 1);
        }
    }

    /// The selection keeps exactly the first candidates of a full ranking:
    /// with top-k 3 only the three best (ties by id) are ever drawn.
    #[test]
    fn top_k_keeps_the_best_ranked_ties_by_id() {
        let logits = [0.5, 2.0, 1.0, 2.0, 1.0, -3.0, 1.0];
        for seed in 0..300 {
            let mut s = Sampler::new(params(2.0, 3, 1.0, seed));
            let t = s.pick(&mut logits.clone(), &[]);
            assert!([1, 2, 3].contains(&t), "{t}");
        }
        // A nucleus larger than the first probe (64) grows until it covers p.
        let flat = vec![0.0f32; 1000];
        let mut drawn = std::collections::HashSet::new();
        for seed in 0..400 {
            let mut s = Sampler::new(params(1.0, 0, 0.5, seed));
            drawn.insert(s.pick(&mut flat.clone(), &[]));
        }
        assert!(drawn.iter().all(|&t| t < 500), "only the 500 best ranked");
        assert!(drawn.len() > 100, "{}", drawn.len());
    }

    /// Without filters the draw walks a growing ranked prefix: the token is
    /// the one a walk of the fully sorted vocabulary finds for the same
    /// random number (the mass summed in id order).
    #[test]
    fn an_unfiltered_draw_equals_the_full_ranking_walk() {
        let vocab = 5000;
        let logits: Vec<f32> = (0..vocab)
            .map(|i| ((i * 7919) % 613) as f32 * 0.02 - (i % 3) as f32)
            .collect();
        for (seed, temperature) in [(1, 1.0), (2, 0.7), (3, 3.0), (4, 25.0)] {
            let mut s = Sampler::new(params(temperature, 0, 1.0, seed));
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for _ in 0..50 {
                let got = s.pick(&mut logits.clone(), &[]);
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let weight = |t: usize| f64::from((logits[t] - max) / temperature).exp();
                let total: f64 = (0..vocab).map(weight).sum();
                let mut order: Vec<usize> = (0..vocab).collect();
                order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
                let mut mass = 0.0;
                let want = order
                    .iter()
                    .find(|&&t| {
                        mass += weight(t);
                        u < mass
                    })
                    .copied()
                    .unwrap_or(order[vocab - 1]);
                assert_eq!(got as usize, want, "seed {seed} T {temperature}");
            }
        }
    }

    /// What the last shard sends is enough: a draw from the best
    /// candidates is the draw from the full row, step after step (the
    /// random stream stays in step too), for greedy, top-k and top-k with
    /// top-p, on rows with many ties, and with more candidates than asked.
    #[test]
    fn the_best_candidates_draw_what_the_full_row_draws() {
        let mut rng = edgeinfer_engine::testing::Lcg(11);
        let settings = [
            (0.0, 0, 1.0),
            (0.0, 40, 0.5),
            (0.8, 40, 1.0),
            (1.0, 1, 1.0),
            (0.7, 50, 0.9),
            (1.3, 256, 0.95),
            (2.0, 3, 0.3),
        ];
        for (n, (temperature, top_k, top_p)) in settings.into_iter().enumerate() {
            let p = params(temperature, top_k, top_p, n as u64);
            let (mut full, mut short) = (Sampler::new(p), Sampler::new(p));
            let k = short.needs_best().expect("a few suffice");
            for step in 0..200 {
                let logits: Vec<f32> = (0..5_000)
                    .map(|_| match step % 2 {
                        // Coarse values: ties at the cut.
                        0 => (rng.unit() * 8.0).round() / 2.0,
                        _ => rng.unit() * 12.0,
                    })
                    .collect();
                let extra = step % 3;
                let top = best(&logits, k + extra);
                let want = full.pick(&mut logits.clone(), &[]);
                assert_eq!(short.pick_best(&top), want, "{p:?} step {step}");
            }
        }
        let penalized = SamplingParams {
            repetition_penalty: 1.2,
            ..params(0.8, 40, 1.0, 1)
        };
        assert_eq!(Sampler::new(penalized).needs_best(), None);
        assert_eq!(Sampler::new(params(0.8, 0, 0.9, 1)).needs_best(), None);
        assert_eq!(Sampler::new(params(0.8, 257, 1.0, 1)).needs_best(), None);
    }

    #[test]
    fn top_p_drops_the_tail() {
        // Probabilities ~0.665, 0.245, 0.090: top_p 0.8 keeps the first two only.
        for seed in 0..200 {
            let mut s = Sampler::new(params(1.0, 0, 0.8, seed));
            assert_ne!(s.pick(&mut [2.0, 1.0, 0.0], &[]), 2);
        }
    }

    #[test]
    fn same_seed_same_choices_and_sampling_follows_the_distribution() {
        let draw = |seed| {
            let mut s = Sampler::new(params(1.0, 0, 1.0, seed));
            (0..4000)
                .map(|_| s.pick(&mut [0.0, 1.0f32.ln(), 3.0f32.ln()], &[]))
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        // Weights 1 : 1 : 3 -> 20% / 20% / 60%.
        let share = |t| a.iter().filter(|&&x| x == t).count() as f64 / a.len() as f64;
        assert!((share(2) - 0.6).abs() < 0.04, "{}", share(2));
        assert!((share(0) - 0.2).abs() < 0.04, "{}", share(0));
    }
}
