// The peer for text generation: onnxruntime-web (npm, wasm backend, one thread,
// SIMD) running the decoder LM edgeinfer embeds (models/tinylm/model.onnx) with
// its KV cache, in Node, on the same prompts, so that our Rust decoder's
// per-token and prefill times have an outside reference beside them.
//
// stdin: {"model": "<path to .onnx>", "runs": N, "layers", "kv_heads", "head_dim",
//         "decode": {"prompt": [ids], "tokens": T}, "prefill": [{"name", "ids": [..]}]}
// stdout: {"ort_version", "load_ms",
//          "decode": {"prompt_tokens", "tokens", "first_token_ms", "prefill_ms_p50",
//                     "ms_per_token_p50", "ids"},
//          "prefill": [{"name", "tokens", "p50_ms", "tokens_per_s"}]}
//
// Decode run: the prompt in one call (P = 0), then T calls of one token each, every
// one fed the greedy (argmax, lowest index on ties) token of the previous call's last
// logits row and the previous presents as pasts. `ids` are those T fed tokens (the
// last run's), comparable with golden.json's shipped_ids. One untimed warm-up run
// precedes the timed ones; first_token_ms is the prompt call of that very first run
// (cold, right after load). ms_per_token_p50 = median over runs of (T steps' time)/T.
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import * as ort from 'onnxruntime-web';

const input = JSON.parse(readFileSync(0, 'utf8'));
ort.env.wasm.numThreads = 1;
ort.env.logLevel = 'error';

const { layers, kv_heads: kvHeads, head_dim: headDim } = input;
const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
const median = (xs) => quantile([...xs].sort((a, b) => a - b), 0.5);
const int64 = (xs) => new ort.Tensor('int64', BigInt64Array.from(xs, BigInt), [1, xs.length]);

const t0 = performance.now();
const session = await ort.InferenceSession.create(readFileSync(input.model), {
  executionProviders: ['wasm'],
  graphOptimizationLevel: 'all',
});
const loadMs = performance.now() - t0;

const emptyCache = () => {
  const cache = {};
  for (let i = 0; i < layers; i++) {
    for (const kind of ['key', 'value']) {
      cache[`past_${kind}_${i}`] = new ort.Tensor('float32', new Float32Array(0), [1, kvHeads, 0, headDim]);
    }
  }
  return cache;
};

// One call: `ids` at positions past..past+S-1 on top of `cache`. Returns the argmax
// of the last logits row and the presents renamed as the next call's pasts.
async function step(ids, past, cache) {
  const out = await session.run({
    input_ids: int64(ids),
    position_ids: int64(ids.map((_, j) => past + j)),
    ...cache,
  });
  const [, s, vocab] = out.logits.dims;
  const row = out.logits.data.subarray((s - 1) * vocab, s * vocab);
  let best = 0;
  for (let v = 1; v < vocab; v++) if (row[v] > row[best]) best = v;
  const next = {};
  for (let i = 0; i < layers; i++) {
    next[`past_key_${i}`] = out[`present_key_${i}`];
    next[`past_value_${i}`] = out[`present_value_${i}`];
  }
  return { token: best, cache: next };
}

async function decodeRun(prompt, tokens) {
  let t = performance.now();
  let { token, cache } = await step(prompt, 0, emptyCache());
  const promptMs = performance.now() - t;
  const ids = [];
  t = performance.now();
  for (let k = 0; k < tokens; k++) {
    ids.push(token);
    ({ token, cache } = await step([token], prompt.length + k, cache));
  }
  return { promptMs, stepsMs: performance.now() - t, ids };
}

const { prompt, tokens } = input.decode;
if (prompt.length + tokens > 256) throw new Error('prompt + tokens must stay <= 256 (the context)');
const warm = await decodeRun(prompt, tokens);
const runs = [];
for (let r = 0; r < input.runs; r++) runs.push(await decodeRun(prompt, tokens));
const decode = {
  prompt_tokens: prompt.length,
  tokens,
  first_token_ms: warm.promptMs,
  prefill_ms_p50: median(runs.map((r) => r.promptMs)),
  ms_per_token_p50: median(runs.map((r) => r.stepsMs / tokens)),
  ids: runs.at(-1).ids,
};

const prefill = [];
for (const c of input.prefill) {
  await step(c.ids, 0, emptyCache());
  const times = [];
  for (let r = 0; r < input.runs; r++) {
    const t = performance.now();
    await step(c.ids, 0, emptyCache());
    times.push(performance.now() - t);
  }
  const p50 = median(times);
  prefill.push({ name: c.name, tokens: c.ids.length, p50_ms: p50, tokens_per_s: (c.ids.length * 1000) / p50 });
}

const { version } = JSON.parse(readFileSync(new URL('../node_modules/onnxruntime-web/package.json', import.meta.url), 'utf8'));
process.stdout.write(JSON.stringify({ ort_version: version, load_ms: loadMs, decode, prefill }) + '\n');
