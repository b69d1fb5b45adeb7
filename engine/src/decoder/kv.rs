//! The key/value cache of one generation: per layer, the rotated keys and
//! the values of every position fed so far. Its whole layout lives here, so
//! the engine that fills it and the shard that keeps, matches and copies it
//! (shard/src/shard.rs) agree on what a position costs.
//!
//! A position's keys and values depend on the tokens before it alone, so a
//! cache cut after `n` positions is exactly what feeding those `n` tokens
//! would have left: that is what lets a conversation's next turn continue
//! from the last one's cache, and two prompts that start alike share one.

/// One generation's keys and values, layer by layer.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Per layer: `len x row` keys, then values likewise.
    pub(crate) layers: Vec<(Vec<f32>, Vec<f32>)>,
    /// Floats per position per layer, keys or values (kv heads x head dim).
    row: usize,
    pub(crate) len: usize,
}

impl KvCache {
    /// An empty cache for `layers` layers of `row` floats per position.
    pub fn new(layers: usize, row: usize) -> Self {
        KvCache {
            layers: vec![(Vec::new(), Vec::new()); layers],
            row,
            len: 0,
        }
    }

    /// Tokens already in the cache (the next token's position).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes one position costs, over every layer (keys and values).
    pub fn bytes_per_token(&self) -> usize {
        self.layers.len() * 2 * self.row * std::mem::size_of::<f32>()
    }

    /// Forgets every token from position `len` on: the cache then holds
    /// what feeding only the first `len` tokens would have left, so a
    /// conversation's next turn can continue from the history it shares
    /// with the last one instead of feeding it again.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        for (keys, values) in &mut self.layers {
            keys.truncate(len * self.row);
            values.truncate(len * self.row);
        }
        self.len = len;
    }

    /// Gives the cache room for exactly `tokens` positions (or the ones it
    /// holds, if more): a shard sizes each pass's cache to its reservation,
    /// so the isolate holds what its budget admitted and never the slack of
    /// a growing vector.
    pub fn reserve_exact(&mut self, tokens: usize) {
        let want = tokens.max(self.len) * self.row;
        for (keys, values) in &mut self.layers {
            for rows in [keys, values] {
                if rows.capacity() != want {
                    let mut sized = Vec::with_capacity(want);
                    sized.extend_from_slice(rows);
                    *rows = sized;
                }
            }
        }
    }

    /// A new cache of the first `len` positions (or all it holds), with
    /// room for `tokens`: another conversation that starts alike continues
    /// from it while this one stays whole.
    pub fn prefix(&self, len: usize, tokens: usize) -> KvCache {
        let len = len.min(self.len);
        let copy = |rows: &Vec<f32>| {
            let mut out = Vec::with_capacity(tokens.max(len) * self.row);
            out.extend_from_slice(&rows[..len * self.row]);
            out
        };
        KvCache {
            layers: self
                .layers
                .iter()
                .map(|(k, v)| (copy(k), copy(v)))
                .collect(),
            row: self.row,
            len,
        }
    }

    /// Bytes held (what a generation costs the isolate beyond the model).
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|(k, v)| (k.capacity() + v.capacity()) * std::mem::size_of::<f32>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(layers: usize, row: usize, len: usize) -> KvCache {
        let mut c = KvCache::new(layers, row);
        for (l, (k, v)) in c.layers.iter_mut().enumerate() {
            k.extend((0..len * row).map(|i| (l * 1000 + i) as f32));
            v.extend((0..len * row).map(|i| -((l * 1000 + i) as f32)));
        }
        c.len = len;
        c
    }

    #[test]
    fn a_prefix_is_the_first_positions_and_leaves_the_original_whole() {
        let c = filled(2, 3, 5);
        let p = c.prefix(2, 10);
        assert_eq!((p.len(), c.len()), (2, 5));
        assert_eq!(
            p.layers[1].0,
            vec![1000.0, 1001.0, 1002.0, 1003.0, 1004.0, 1005.0]
        );
        assert_eq!(p.layers[1].1[5], -1005.0);
        assert_eq!(p.bytes(), 2 * 2 * 10 * 3 * 4);
        assert_eq!(c.prefix(9, 1).len(), 5);
    }

    #[test]
    fn truncate_and_reserve_keep_what_the_positions_hold() {
        let mut c = filled(1, 2, 4);
        let before = c.clone();
        c.truncate(9);
        assert_eq!(c.len(), 4);
        c.truncate(3);
        assert_eq!(c.layers[0].0, before.layers[0].0[..6]);
        c.reserve_exact(8);
        assert_eq!(c.bytes(), 2 * 8 * 2 * 4);
        c.reserve_exact(1);
        assert_eq!((c.len(), c.bytes()), (3, 2 * 3 * 2 * 4));
        assert_eq!(c.bytes_per_token(), 2 * 2 * 4);
    }
}
