//! One reply being generated, token by token, as text deltas a stream can
//! send as soon as they are safe to show.
//!
//! "Safe" means: never half a UTF-8 character (a byte-level tokenizer can
//! split one across tokens), and never the beginning of a stop sequence that
//! the next tokens might complete (the stop sequence itself is not part of the
//! reply, as in OpenAI's API).

use super::chat::ChatModel;
use super::constraint::Constraint;
use super::sampling::{Logits, Sampler, SamplingParams};
use crate::error::CoreError;
use edgeinfer_engine::decoder::KvCache;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its reply, or a stop sequence was produced.
    Stop,
    /// `max_tokens` or the model's context was reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate (the control token that ends a reply counts).
    pub max_tokens: usize,
    /// Text that ends the reply when generated; not included in it.
    pub stop: Vec<String>,
    pub sampling: SamplingParams,
}

impl GenerateOptions {
    /// Argmax at every step, no stop text: the reference decoding the
    /// golden and constraint checks compare against.
    pub fn greedy(max_tokens: usize) -> Self {
        GenerateOptions {
            max_tokens,
            stop: Vec::new(),
            sampling: SamplingParams {
                temperature: 0.0,
                ..SamplingParams::default()
            },
        }
    }
}

/// What one step produced: text to append (possibly empty while a character
/// or a possible stop sequence is incomplete), and the end, once reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub text: String,
    pub finish: Option<FinishReason>,
}

pub struct Generation<'m> {
    model: &'m ChatModel,
    options: GenerateOptions,
    sampler: Sampler,
    cache: KvCache,
    /// The prompt, then the reply's tokens (no control token): what the
    /// repetition penalty sees.
    tokens: Vec<u32>,
    prompt_len: usize,
    /// The reply's text as the tokens come.
    reply: ReplyText,
    /// Tokens sampled, control token included (usage.completion_tokens).
    sampled: usize,
    /// Logits for the next token, once computed.
    logits: Option<Logits>,
    /// Tokens the model has been fed (the next one's position).
    fed: usize,
    /// The last sampled token, still to be fed to the model.
    pending: Option<u32>,
    finish: Option<FinishReason>,
    /// The grammar the reply is held to, if any, and the time its masks
    /// took (ms, by `clock`).
    constraint: Option<Constraint>,
    clock: fn() -> f64,
    constraint_ms: f64,
}

/// A reply's text, kept from its tokens as they are sampled: what is safe
/// to hand out, and where a stop sequence cuts it. Apart from the model so
/// that tokenizer behaviours (pieces joined, characters split across
/// tokens) are tested with a decoder made up for the test.
struct ReplyText {
    stop: Vec<String>,
    /// Reply tokens (from the prompt's end) whose text is in `text`: from
    /// `decoded_from` on they are decoded again with the next ones, so a
    /// tokenizer that joins pieces (a leading space, a split UTF-8
    /// character) gives the same text as decoding the whole reply, while a
    /// step decodes a few tokens, not the whole reply.
    start: usize,
    decoded_from: usize,
    decoded_to: usize,
    /// Bytes of `text` already handed out.
    emitted: usize,
    text: String,
}

impl ReplyText {
    fn new(start: usize, stop: Vec<String>) -> Self {
        ReplyText {
            stop,
            start,
            decoded_from: start,
            decoded_to: start,
            emitted: 0,
            text: String::new(),
        }
    }

    /// The text handed out so far.
    fn shown(&self) -> &str {
        &self.text[..self.emitted]
    }

    /// Appends the text of `tokens` not yet decoded, once it is whole (does
    /// not end in an incomplete character), or anyway when `flush`.
    fn decode_new<D>(&mut self, tokens: &[u32], decode: D, flush: bool) -> Result<(), CoreError>
    where
        D: Fn(&[u32]) -> Result<String, CoreError>,
    {
        if self.decoded_to == tokens.len() {
            return Ok(());
        }
        let known = decode(&tokens[self.decoded_from..self.decoded_to])?;
        let all = decode(&tokens[self.decoded_from..])?;
        if all.ends_with('\u{FFFD}') && !flush {
            return Ok(());
        }
        if let Some(new) = all.get(known.len()..).filter(|_| all.starts_with(&known)) {
            self.text.push_str(new);
        } else {
            // The tokenizer rewrote what it had already produced: fall back
            // to the whole reply (never seen with byte-level BPE).
            self.text = decode(&tokens[self.start..])?;
        }
        self.decoded_from = self.decoded_to;
        self.decoded_to = tokens.len();
        Ok(())
    }

    /// Cuts the text before the earliest complete stop sequence, if there
    /// is one: true when it did (nothing after it is part of the reply).
    fn cut_at_stop(&mut self, tokens: usize) -> bool {
        let Some(cut) = self
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.text.find(s.as_str()))
            .min()
        else {
            return false;
        };
        // What was handed out never holds a whole stop sequence, nor the
        // start of one (see `safe_len`): the cut is never before it.
        self.text.truncate(cut.max(self.emitted));
        self.decoded_from = tokens;
        self.decoded_to = tokens;
        true
    }

    /// How much of the text can be shown: all but a trailing replacement
    /// character (an incomplete UTF-8 sequence, for now) and any tail that
    /// begins a stop sequence.
    fn safe_len(&self) -> usize {
        let visible = self.text.trim_end_matches('\u{FFFD}');
        let mut safe = visible.len();
        for stop in self.stop.iter().filter(|s| !s.is_empty()) {
            for (i, _) in visible.char_indices().rev().take(stop.chars().count()) {
                if stop.starts_with(&visible[i..]) {
                    safe = safe.min(i);
                }
            }
        }
        safe
    }

    /// Hands out the text up to `end` not handed out yet.
    fn take_until(&mut self, end: usize) -> String {
        let start = self.emitted;
        if end <= start || !self.text.is_char_boundary(start) {
            return String::new();
        }
        self.emitted = end;
        self.text[start..end].to_string()
    }

    /// The next delta of a reply still going.
    fn take_safe(&mut self) -> String {
        self.take_until(self.safe_len())
    }

    /// Everything left, at the end of the reply.
    fn take_rest(&mut self) -> String {
        self.take_until(self.text.len())
    }
}

impl<'m> Generation<'m> {
    /// Starts generating after `prompt` (ids, as [`ChatModel::prompt`]
    /// makes).
    pub fn new(model: &'m ChatModel, prompt: Vec<u32>, options: GenerateOptions) -> Self {
        Generation {
            model,
            sampler: Sampler::new(options.sampling),
            reply: ReplyText::new(prompt.len(), options.stop.clone()),
            options,
            cache: model.decoder().new_cache(),
            prompt_len: prompt.len(),
            tokens: prompt,
            sampled: 0,
            logits: None,
            fed: 0,
            pending: None,
            finish: None,
            constraint: None,
            clock: || 0.0,
            constraint_ms: 0.0,
        }
    }

    /// Holds the reply to `constraint` from its first token on: each
    /// step's logits are masked to what the grammar allows before sampling
    /// (greedy or not), and the reply ends when the grammar is complete.
    /// `clock` times the masks (see [`Generation::constraint_ms`]).
    pub fn constrain(&mut self, constraint: Constraint, clock: fn() -> f64) {
        self.constraint = Some(constraint);
        self.clock = clock;
    }

    /// Time spent computing and applying grammar masks so far (ms).
    pub fn constraint_ms(&self) -> f64 {
        self.constraint_ms
    }

    /// The most tokens this generation feeds the model: the prompt and
    /// `max_tokens` of reply (the last sampled token is never fed), within
    /// the context.
    pub fn most_tokens(&self) -> usize {
        (self.prompt_len + self.options.max_tokens.saturating_sub(1)).clamp(1, self.model.context())
    }

    /// Whether the model runs here (else the caller runs each pass).
    pub fn is_local(&self) -> bool {
        self.model.is_local()
    }

    pub fn prompt_tokens(&self) -> usize {
        self.prompt_len
    }

    /// The prompt's token ids (what a sharded model's shards match their
    /// kept caches against).
    pub fn prompt(&self) -> &[u32] {
        &self.tokens[..self.prompt_len]
    }

    pub fn completion_tokens(&self) -> usize {
        self.sampled
    }

    /// The reply so far (all of it once finished).
    pub fn text(&self) -> &str {
        self.reply.shown()
    }

    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// Runs to the end and returns the whole reply.
    pub fn run_to_end(&mut self) -> Result<(String, FinishReason), CoreError> {
        while self.step()?.is_some() {}
        let finish = self.finish.unwrap_or(FinishReason::Length);
        Ok((self.text().to_string(), finish))
    }

    /// The tokens the next step must feed the model, when it needs a pass
    /// (the prompt first, then each sampled token); `None` when it needs
    /// none (finished, or about to end on `max_tokens` or the context).
    /// A model whose weights are elsewhere (shard Workers) is run by the
    /// caller on these, and its logits handed back with
    /// [`Generation::supply`] before [`Generation::step`].
    pub fn wants(&self) -> Option<Vec<u32>> {
        if self.finish.is_some() || self.sampled >= self.options.max_tokens || self.logits.is_some()
        {
            return None;
        }
        match self.pending {
            Some(_) if self.fed >= self.model.context() => None,
            Some(token) => Some(vec![token]),
            None => Some(self.tokens.clone()),
        }
    }

    /// How many of the next pass's best logits the step needs, when fewer
    /// than all ([`Sampler::needs_best`]): a host whose model runs in
    /// shards asks the last for just these. `None` under a grammar, whose
    /// mask may leave any token.
    pub fn needs_best(&self) -> Option<usize> {
        match self.constraint {
            Some(_) => None,
            None => self.sampler.needs_best(),
        }
    }

    /// The logits of the pass [`Generation::wants`] asked for: the whole
    /// row, or at least [`Generation::needs_best`] best candidates.
    pub fn supply(&mut self, logits: Logits) -> Result<(), CoreError> {
        let vocab = self.model.decoder().config().vocab;
        let wrong = match &logits {
            Logits::All(row) => (row.len() != vocab)
                .then(|| format!("{} logits for a vocabulary of {vocab}", row.len())),
            Logits::Best(top) => match self.needs_best() {
                None => Some("candidates where the step needs every logit".into()),
                Some(k) if top.len() < k.min(vocab) => {
                    Some(format!("{} candidates where the step needs {k}", top.len()))
                }
                _ => top
                    .iter()
                    .find(|c| c.0 as usize >= vocab)
                    .map(|c| format!("candidate {} in a vocabulary of {vocab}", c.0)),
            },
        };
        if let Some(reason) = wrong {
            return Err(CoreError::Inference {
                model: self.model.spec_id(),
                reason,
            });
        }
        self.fed += if self.pending.take().is_some() {
            1
        } else {
            self.tokens.len()
        };
        self.logits = Some(logits);
        Ok(())
    }

    /// One model pass and one sampled token; `None` once finished.
    pub fn step(&mut self) -> Result<Option<Delta>, CoreError> {
        if self.finish.is_some() {
            return Ok(None);
        }
        if self.sampled >= self.options.max_tokens {
            return Ok(Some(self.end(FinishReason::Length)?));
        }
        let model = self.model.spec_id();
        if self.logits.is_none() {
            let Some(feed) = self.wants() else {
                // The context is full.
                return Ok(Some(self.end(FinishReason::Length)?));
            };
            if !self.model.is_local() {
                return Err(CoreError::Inference {
                    model,
                    reason: "the shards' logits were not supplied".into(),
                });
            }
            let logits = self
                .model
                .decoder()
                .forward(&mut self.cache, &feed)
                .map_err(|e| CoreError::Inference {
                    model,
                    reason: e.to_string(),
                })?;
            self.supply(Logits::All(logits))?;
        }
        let token = match self.logits.take() {
            None => return Ok(Some(self.end(FinishReason::Length)?)),
            Some(Logits::Best(top)) => self.sampler.pick_best(&top),
            Some(Logits::All(mut logits)) => {
                if let Some(constraint) = &self.constraint {
                    let started = (self.clock)();
                    constraint.mask(&mut logits);
                    self.constraint_ms += ((self.clock)() - started).max(0.0);
                }
                self.sampler.pick(&mut logits, &self.tokens)
            }
        };
        self.sampled += 1;
        if self.model.template().is_control(token) {
            return Ok(Some(self.end(FinishReason::Stop)?));
        }
        let mut complete = false;
        if let Some(constraint) = &mut self.constraint {
            let started = (self.clock)();
            if !constraint.allows(token) {
                // Every logit but the allowed ones was -inf: only NaN logits
                // get here.
                return Err(CoreError::Inference {
                    model,
                    reason: format!("token {token} sampled outside the grammar"),
                });
            }
            constraint
                .accept(token)
                .map_err(|reason| CoreError::Inference { model, reason })?;
            complete = constraint.only_end();
            self.constraint_ms += ((self.clock)() - started).max(0.0);
        }
        self.tokens.push(token);
        self.pending = Some(token);
        if complete {
            // The grammar allows nothing but the end: no pass to ask for it.
            return Ok(Some(self.end(FinishReason::Stop)?));
        }
        let model = self.model;
        self.reply
            .decode_new(&self.tokens, |ids| model.decode(ids), false)?;
        if self.reply.cut_at_stop(self.tokens.len()) {
            return Ok(Some(self.end(FinishReason::Stop)?));
        }
        let text = self.reply.take_safe();
        Ok(Some(Delta { text, finish: None }))
    }

    /// Ends the reply: what remains undecoded is decoded as it is (an
    /// incomplete character at the very end shows as U+FFFD, as decoding
    /// the whole reply would), and a stop sequence that this last text
    /// completes still cuts it (and makes the end a stop).
    fn end(&mut self, reason: FinishReason) -> Result<Delta, CoreError> {
        let model = self.model;
        self.reply
            .decode_new(&self.tokens, |ids| model.decode(ids), true)?;
        let reason = match self.reply.cut_at_stop(self.tokens.len()) {
            true => FinishReason::Stop,
            false => reason,
        };
        self.finish = Some(reason);
        let text = self.reply.take_rest();
        Ok(Delta {
            text,
            finish: Some(reason),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A made-up byte-level tokenizer: token `i` is the bytes `PIECES[i]`
    /// (a piece may end inside a character, as byte-level BPE's do).
    const PIECES: [&[u8]; 6] = [b"o", b"k\xE3", b"\x80\x82", b" wor", b"ld", b"h\xC3\xA9"];

    fn pieces(ids: &[u32]) -> Result<String, CoreError> {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&i| PIECES[i as usize].iter().copied())
            .collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Samples `ids` one at a time as `step` does, then ends the reply:
    /// the deltas handed out, the reply, and whether a stop sequence ended it.
    fn stream(ids: &[u32], stop: &[&str]) -> (Vec<String>, String, bool) {
        let mut reply = ReplyText::new(0, stop.iter().map(|s| s.to_string()).collect());
        let mut tokens = Vec::new();
        let mut deltas = Vec::new();
        for &id in ids {
            tokens.push(id);
            reply.decode_new(&tokens, pieces, false).unwrap();
            if reply.cut_at_stop(tokens.len()) {
                deltas.push(reply.take_rest());
                return (deltas, reply.shown().to_string(), true);
            }
            deltas.push(reply.take_safe());
        }
        reply.decode_new(&tokens, pieces, true).unwrap();
        let stopped = reply.cut_at_stop(tokens.len());
        deltas.push(reply.take_rest());
        (deltas, reply.shown().to_string(), stopped)
    }

    /// A stop sequence completed by the text flushed at the end (held back
    /// while its last token ended inside a character) still ends the reply
    /// before it, and is never shown.
    #[test]
    fn a_stop_sequence_completed_by_the_final_flush_is_cut() {
        // "o", then "k" + the first byte of "。", then max_tokens.
        let (deltas, text, stopped) = stream(&[0, 1], &["k"]);
        assert!(stopped, "{deltas:?}");
        assert_eq!(text, "o");
        assert!(!deltas.concat().contains('k'), "{deltas:?}");
        // The same reply without the stop: the flush shows what is there.
        let (_, text, stopped) = stream(&[0, 1], &[]);
        assert!(!stopped);
        assert_eq!(text, "ok\u{FFFD}");
        // The character completed by the next token is shown whole.
        let (deltas, text, _) = stream(&[0, 1, 2], &[]);
        assert_eq!(
            (text.as_str(), deltas.concat()),
            ("ok。", "ok。".to_string())
        );
    }

    /// Held back: half a character, and a tail that may begin a stop.
    #[test]
    fn deltas_never_show_half_a_character_or_the_start_of_a_stop() {
        let (deltas, text, stopped) = stream(&[5, 3], &["world"]);
        assert!(!stopped);
        assert_eq!(
            (text.as_str(), deltas.concat()),
            ("hé wor", "hé wor".to_string())
        );
        assert!(deltas.iter().all(|d| !d.contains('\u{FFFD}')));
        // "wor" was held back until the end: it might have begun "world".
        assert_eq!(deltas.last().map(String::as_str), Some("wor"));
        let (deltas, text, stopped) = stream(&[5, 3, 4], &["world"]);
        assert!(stopped);
        assert_eq!((text.as_str(), deltas.concat()), ("hé ", "hé ".to_string()));
    }
}
