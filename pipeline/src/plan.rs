//! How a decoder too big for one isolate is cut across Worker scripts.
//!
//! Each shard is its own Worker (Durable Objects of one class may share an
//! isolate, so only separate scripts get separate 128 MB). A shard holds a
//! contiguous run of layers; the first also holds the token embedding (the
//! lookup) and the last the final norm and the output head. With a tied head
//! the embedding matrix is in both, unless one shard holds everything.
//!
//! What a shard's isolate holds, and what the plan budgets:
//! - its weights twice: the module's bytes, and the linear memory its data
//!   segment is copied into at instantiation (the engine then reads them in
//!   place, so there is no third copy);
//! - the code of the module (the same wasm for every shard) and the
//!   runtime's own memory of an isolate, both measured;
//! - the key/value cache of its layers at the allowed context, for as many
//!   generations at once as one isolate may serve.
//!
//! Greedy filling in layer order gives the fewest shards for a contiguous
//! cut (a shard is only closed when the next layer would not fit), and the
//! number of shards is the number of hops a token pays.

use std::ops::Range;

/// The limits every isolate of the plan must keep.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Memory of one isolate (Cloudflare: 128 MB, module bytes included).
    pub isolate_bytes: u64,
    /// Largest Worker script (its module).
    pub worker_bytes: u64,
    /// The module's code, without any embedded weights (measured).
    pub code_bytes: u64,
    /// An isolate's memory before any weight is embedded (measured: the
    /// runtime, the code's own heap, request buffers).
    pub runtime_bytes: u64,
    /// Tokens (prompt + reply) one generation may hold in its cache.
    pub context: usize,
    /// Generations one shard isolate serves at once.
    pub sessions: usize,
}

/// What the model's parts cost, in packed bytes.
#[derive(Debug, Clone)]
pub struct Costs {
    pub embedding: u64,
    /// `None` when the head is the embedding (tied).
    pub head: Option<u64>,
    pub final_norm: u64,
    pub layers: Vec<u64>,
    /// Key and value bytes one token adds to one layer's cache.
    pub kv_per_token: u64,
    /// What a pass holds while it runs, in every shard: a window of rows.
    pub stage: u64,
    /// What the last shard's batch holds besides: its rows of logits.
    pub logits: u64,
}

/// One Worker of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    pub layers: Range<usize>,
    /// Holds the token embedding (the first shard).
    pub embedding: bool,
    /// Holds the final norm and the head (the last shard).
    pub head: bool,
    /// Packed weight bytes embedded in this Worker.
    pub weights: u64,
    /// Its isolate's memory at the budget's context and sessions.
    pub memory: u64,
}

impl Costs {
    fn head_bytes(&self) -> u64 {
        self.head.unwrap_or(self.embedding) + self.final_norm
    }

    fn weights(&self, layers: &Range<usize>, embedding: bool, head: bool) -> u64 {
        let mut w: u64 = self.layers[layers.clone()].iter().sum();
        if embedding {
            w += self.embedding;
        }
        if head {
            w += self.head_bytes();
            // One matrix serves the lookup and the head.
            if embedding && self.head.is_none() {
                w -= self.embedding;
            }
        }
        w
    }
}

impl Budget {
    fn shard(&self, costs: &Costs, layers: Range<usize>, embedding: bool, head: bool) -> Shard {
        let weights = costs.weights(&layers, embedding, head);
        let kv =
            costs.kv_per_token * self.context as u64 * self.sessions as u64 * layers.len() as u64;
        let transient = costs.stage + if head { costs.logits } else { 0 };
        Shard {
            memory: 2 * weights + self.code_bytes + self.runtime_bytes + kv + transient,
            layers,
            embedding,
            head,
            weights,
        }
    }

    fn fits(&self, s: &Shard) -> bool {
        s.memory <= self.isolate_bytes && s.weights + self.code_bytes <= self.worker_bytes
    }
}

/// The fewest shards, in layer order, each within `budget` (dynamic
/// programming over where each shard ends: layers are few). The first
/// shard may hold the embedding alone when it leaves no room for a layer.
pub fn plan(costs: &Costs, budget: &Budget) -> Result<Vec<Shard>, String> {
    let n = costs.layers.len();
    let whole = budget.shard(costs, 0..n, true, true);
    if budget.fits(&whole) {
        return Ok(vec![whole]);
    }
    // best[j]: the fewest shards holding the embedding and layers 0..j (no
    // head yet), and where the last of them starts (`None`: it is the first).
    let mut best: Vec<Option<(usize, Option<usize>)>> = vec![None; n + 1];
    for j in 0..=n {
        if budget.fits(&budget.shard(costs, 0..j, true, false)) {
            best[j] = Some((1, None));
        }
        for i in 0..j {
            let Some((count, _)) = best[i] else { continue };
            if budget.fits(&budget.shard(costs, i..j, false, false))
                && best[j].is_none_or(|(c, _)| count + 1 < c)
            {
                best[j] = Some((count + 1, Some(i)));
            }
        }
    }
    // The head in a last shard of layers i..n, or alone after all of them.
    let mut end: Option<(usize, usize)> = None;
    for (i, planned) in best.iter().enumerate() {
        let Some((count, _)) = *planned else { continue };
        if budget.fits(&budget.shard(costs, i..n, false, true))
            && end.is_none_or(|(c, _)| count + 1 < c)
        {
            end = Some((count + 1, i));
        }
    }
    let Some((_, start)) = end else {
        return Err(refusal(costs, budget));
    };
    let mut shards = vec![budget.shard(costs, start..n, false, true)];
    let mut stop = start;
    loop {
        match best[stop].expect("a planned prefix").1 {
            None => {
                shards.push(budget.shard(costs, 0..stop, true, false));
                break;
            }
            Some(i) => {
                shards.push(budget.shard(costs, i..stop, false, false));
                stop = i;
            }
        }
    }
    shards.reverse();
    Ok(shards)
}

/// Why no plan exists: the first part that does not fit an isolate alone.
fn refusal(costs: &Costs, budget: &Budget) -> String {
    let n = costs.layers.len();
    let parts = (0..n)
        .map(|i| {
            (
                format!("layer {i}"),
                budget.shard(costs, i..i + 1, false, false),
            )
        })
        .chain([
            (
                "the embedding".to_string(),
                budget.shard(costs, 0..0, true, false),
            ),
            (
                "the head".to_string(),
                budget.shard(costs, n..n, false, true),
            ),
        ]);
    for (what, s) in parts {
        if !budget.fits(&s) {
            return format!(
                "{what} does not fit one isolate: {} bytes of memory (budget {}), a Worker of {} bytes (limit {})",
                s.memory,
                budget.isolate_bytes,
                s.weights + budget.code_bytes,
                budget.worker_bytes
            );
        }
    }
    "no cut of the layers fits the budget".to_string()
}

/// One Worker of a vocabulary cut: rows `rows` of the embedding and of the
/// head (when not tied), and the final norm (`Gguf::pack_vocab_slice`).
#[derive(Debug, Clone, PartialEq)]
pub struct VocabShard {
    pub rows: Range<usize>,
    /// Packed weight bytes embedded in this Worker.
    pub weights: u64,
    /// Its isolate's memory: the weights twice, code and runtime, and the
    /// logits of its rows for a batch.
    pub memory: u64,
}

/// A model whose embedding (or head) fits no isolate beside anything else:
/// its vocabulary cut by rows across `vocab` Workers, its layers across
/// `layers` Workers that take and give hidden states. A token costs one
/// call to the slice holding its row, the layer shards in turn, then every
/// slice at once for the logits (their best candidates, merged by the
/// caller): `1 + layers + vocab` Workers per request.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitPlan {
    pub vocab: Vec<VocabShard>,
    pub layers: Vec<Shard>,
}

impl SplitPlan {
    /// Distinct Workers a request reaches (the front's own included):
    /// what Cloudflare's limit of 32 invocations per request bounds.
    pub fn workers(&self) -> usize {
        1 + self.vocab.len() + self.layers.len()
    }
}

/// Cloudflare's limit of Worker invocations one request may make.
pub const MOST_WORKERS: usize = 32;

/// The fewest vocabulary slices (equal, in whole panels of four rows) that
/// each fit an isolate, then the fewest layer shards (greedy in layer order
/// is optimal when no shard holds anything but layers).
pub fn plan_split(costs: &Costs, budget: &Budget, vocab: usize) -> Result<SplitPlan, String> {
    if vocab == 0 {
        return Err("an empty vocabulary".into());
    }
    let matrices = costs.embedding + costs.head.unwrap_or(0);
    let slice = |rows: Range<usize>| {
        let n = rows.len() as u64;
        let weights = (matrices * n).div_ceil(vocab as u64) + costs.final_norm;
        let logits = (costs.logits * n).div_ceil(vocab as u64);
        VocabShard {
            memory: 2 * weights + budget.code_bytes + budget.runtime_bytes + costs.stage + logits,
            weights,
            rows,
        }
    };
    let fits = |s: &VocabShard| {
        s.memory <= budget.isolate_bytes && s.weights + budget.code_bytes <= budget.worker_bytes
    };
    let cut = |count: usize| -> Vec<VocabShard> {
        let size = vocab.div_ceil(count).div_ceil(4) * 4;
        (0..vocab)
            .step_by(size)
            .map(|a| slice(a..(a + size).min(vocab)))
            .collect()
    };
    // More Workers than a request may reach is no plan.
    let vocab_shards = (1..=MOST_WORKERS.min(vocab.div_ceil(4)))
        .map(cut)
        .find(|s| s.iter().all(fits))
        .ok_or_else(|| {
            format!("the vocabulary does not fit {MOST_WORKERS} isolates: {matrices} bytes of embedding and head")
        })?;
    let mut layers = Vec::new();
    let mut start = 0;
    let n = costs.layers.len();
    while start < n {
        let mut end = start;
        while end < n && budget.fits(&budget.shard(costs, start..end + 1, false, false)) {
            end += 1;
        }
        if end == start {
            return Err(format!(
                "layer {start} does not fit one isolate: {} bytes of memory (budget {})",
                budget.shard(costs, start..start + 1, false, false).memory,
                budget.isolate_bytes
            ));
        }
        layers.push(budget.shard(costs, start..end, false, false));
        start = end;
    }
    let split = SplitPlan {
        vocab: vocab_shards,
        layers,
    };
    if split.workers() > MOST_WORKERS {
        return Err(format!(
            "{} Workers a request ({} vocabulary slices, {} layer shards and the front): \
             over the {MOST_WORKERS} one request may reach",
            split.workers(),
            split.vocab.len(),
            split.layers.len()
        ));
    }
    Ok(split)
}
