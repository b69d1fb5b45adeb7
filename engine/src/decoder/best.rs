//! The best few of a row of logits, ranked as the sampler ranks them.
//!
//! Why here: the last shard of a sharded model picks them where the logits
//! are made, so a decode step sends a few candidates instead of the whole
//! vocabulary's logits (196 KB per token for SmolLM2) and the front samples
//! among a few instead of 49,152. The front's sampler calls this same
//! function on full logits, so a draw from the shard's candidates is the
//! draw from the full row, bit for bit.

/// A token id and its logit.
pub type Candidate = (u32, f32);

/// The most candidates a caller may ask a model's last shard for instead of
/// the whole row: above every common `top_k` (40 is the default, 50 and 100
/// are usual), while picking them still costs about one read of the row
/// (each of the few that enter the kept list moves it once).
pub const MOST_BEST: usize = 256;

/// The logit's position in `f32::total_cmp`'s order, as an integer: one
/// compare per logit in the scan. `-0.0` ranks as `0.0` (adding `0.0` makes
/// it one), so equal logits are ties whatever their sign, as in argmax.
#[inline(always)]
fn rank_key(logit: f32) -> i32 {
    let bits = (logit + 0.0).to_bits() as i32;
    bits ^ ((((bits >> 31) as u32) >> 1) as i32)
}

/// The `k` best of `logits` (all of them when `k` is larger), best first:
/// by decreasing logit in `f32::total_cmp`'s order (a NaN above every
/// number, as `torch.argmax` takes it), equal logits by lower id (argmax's
/// rule, the one the golden references use).
///
/// One pass with the kept few sorted: a logit no better than the worst kept
/// costs one compare, so the whole row costs about a read of it (a sort or
/// a selection over every id would move the whole vocabulary).
pub fn best(logits: &[f32], k: usize) -> Vec<Candidate> {
    let k = k.min(logits.len());
    // (key, id), best first.
    let mut kept: Vec<(i32, u32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return Vec::new();
    }
    let mut worst = i32::MIN;
    for (id, &logit) in logits.iter().enumerate() {
        let key = rank_key(logit);
        // Ids come in increasing order: a tie with the worst kept loses.
        if kept.len() == k && key <= worst {
            continue;
        }
        let at = kept.partition_point(|&(kept_key, _)| kept_key >= key);
        kept.insert(at, (key, id as u32));
        kept.truncate(k);
        if kept.len() == k {
            worst = kept[k - 1].0;
        }
    }
    kept.into_iter()
        .map(|(_, id)| (id, logits[id as usize]))
        .collect()
}

/// The `k` best of several slices' candidates, each slice's from [`best`]
/// over its own rows of one row of logits (ids already the model's): the
/// same candidates, in the same order, as [`best`] over the whole row, so
/// a head cut by vocabulary rows across shards samples as the whole head.
/// Whatever a slice did not keep cannot be among the `k` best, since it
/// ranks below `k` candidates of its own slice.
pub fn merge(slices: &[Vec<Candidate>], k: usize) -> Vec<Candidate> {
    let mut all: Vec<Candidate> = slices.iter().flatten().copied().collect();
    // Best first: higher key, then lower id (as `best` breaks ties).
    all.sort_by(|a, b| rank_key(b.1).cmp(&rank_key(a.1)).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Lcg;

    /// Few distinct values: many ties, across the sign and zero.
    const PALETTE: [f32; 9] = [
        -1.5,
        -0.0,
        0.0,
        0.25,
        2.0,
        f32::NEG_INFINITY,
        f32::INFINITY,
        -3.0e38,
        7.0,
    ];

    /// The reference: every id sorted by the sampler's ranking.
    fn sorted(logits: &[f32], k: usize) -> Vec<Candidate> {
        let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
        ids.sort_by(|&a, &b| {
            (logits[b as usize] + 0.0)
                .total_cmp(&(logits[a as usize] + 0.0))
                .then(a.cmp(&b))
        });
        ids.into_iter()
            .take(k)
            .map(|id| (id, logits[id as usize]))
            .collect()
    }

    fn bits(c: &[Candidate]) -> Vec<(u32, u32)> {
        c.iter().map(|&(id, l)| (id, l.to_bits())).collect()
    }

    #[test]
    fn equals_a_full_sort_with_ties_negative_zero_and_infinities() {
        let mut rng = Lcg(7);
        for case in 0..400 {
            let n = 1 + case % 97;
            let logits: Vec<f32> = (0..n)
                .map(|_| match case % 3 {
                    0 => PALETTE[rng.next_u32() as usize % PALETTE.len()],
                    _ => rng.unit() * 10.0,
                })
                .collect();
            for k in [0, 1, 2, 3, 40, n - 1, n, n + 5] {
                assert_eq!(
                    bits(&best(&logits, k)),
                    bits(&sorted(&logits, k)),
                    "case {case} k {k} {logits:?}"
                );
            }
        }
    }

    /// A row cut in three at every few places: each slice's best with the
    /// model's ids, merged, is the whole row's best, ties and all.
    #[test]
    fn merged_slices_rank_as_the_whole_row() {
        let mut rng = Lcg(11);
        for case in 0..200 {
            let n = 3 + case % 61;
            let logits: Vec<f32> = (0..n)
                .map(|_| PALETTE[rng.next_u32() as usize % PALETTE.len()])
                .collect();
            let a = 1 + rng.next_u32() as usize % (n - 2);
            let b = a + 1 + rng.next_u32() as usize % (n - a - 1);
            for k in [1, 2, 5, n] {
                let slices: Vec<Vec<Candidate>> = [0..a, a..b, b..n]
                    .into_iter()
                    .map(|r| {
                        best(&logits[r.clone()], k)
                            .into_iter()
                            .map(|(id, l)| (id + r.start as u32, l))
                            .collect()
                    })
                    .collect();
                assert_eq!(
                    bits(&merge(&slices, k)),
                    bits(&best(&logits, k)),
                    "case {case} k {k}"
                );
            }
        }
    }

    #[test]
    fn a_vocabulary_row() {
        let logits = Lcg(3).vec(49_152, 15.0);
        for k in [1, 40, 256] {
            assert_eq!(bits(&best(&logits, k)), bits(&sorted(&logits, k)));
        }
    }
}
