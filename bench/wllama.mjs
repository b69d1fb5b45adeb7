// A second outside peer for text generation: @wllama/wllama (llama.cpp built to wasm,
// npm) running the SmolLM2 GGUF on one thread in Node, on the same prompt ids, so our
// Rust decoder's prefill and per-token times sit beside llama.cpp's own wasm build.
//
// stdin: {"gguf": "<path to .gguf>", "prompt_ids": [ids], "new_tokens": T, "runs": N}
// stdout: {"package", "version", "threads", "prompt_tokens", "prefill_ms",
//          "decode_ms_per_token", "greedy_ids", "load_ms", "engine_prefill_ms",
//          "engine_decode_ms_per_token", "note"}
//
// wllama targets browsers, so Node 20 needs three things from us:
// - its default wasm is wasm64 + JSPI, which V8 11.3 lacks (its memory64 and stack
//   switching are older, flag-only drafts), so wllama falls back to the compat build
//   (@wllama/wllama-compat: wasm32, Asyncify, SIMD128), which we point at on disk;
// - it spawns a Web Worker from a blob: URL; NodeWorker below runs that code in a
//   worker_threads Worker with the few worker globals it touches;
// - it reads `navigator` and `self.location`, and its cache manager wants OPFS; a
//   stub cache manager is enough since the model comes in as a Blob.
// wllama 3 wraps llama-server and takes prompts as text only, so the ids are turned
// back into text with the GGUF's own vocab and llama.cpp re-tokenizes them (special
// tokens parsed); a prompt token count that differs from ours is flagged in `note`.
//
// Run: one untimed warm-up of T tokens with logprobs on (their entries carry the token
// ids, which is where greedy_ids come from; greedy makes every run produce the same
// ids), then N timed pairs without them: a max_tokens 1 request (prefill_ms: the prompt
// pass plus its sample) and a T-token one (decode_ms_per_token = the difference / (T-1)).
// Not the time to the first streamed token: wllama steps llama-server's loop once per
// poll and a token's chunk only reaches JS after the next token's pass. The engine_*
// fields are llama-server's own timings of the T-token request, without wllama's
// JS/worker round trips.
// Running all T tokens takes ignore_eos, and llama-server implements it by biasing
// every end-of-generation token to -inf: greedy_ids are the argmax over the other
// tokens, so they leave golden.json's new_ids where the model would pick <|im_end|>.
// flash_attn is off: with it on (llama.cpp's "auto") this build greedy-decodes garbage.
// Note: in this build ggml_vec_dot_q4_1_q8_1 has no SIMD, so the Q4_1 GGUF's matmuls
// run scalar (q4_0 via its repacked layout, q8_0 and the K-quants have SIMD kernels).
import { readFileSync } from 'node:fs';
import { resolveObjectURL } from 'node:buffer';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import { Worker as ThreadWorker } from 'node:worker_threads';

const input = JSON.parse(readFileSync(0, 'utf8'));
const require = createRequire(import.meta.url);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const stderr = (...a) => console.error(...a);
// stdout carries only the result; wllama and llama.cpp logs go to stderr.
const logger = { debug: () => {}, log: stderr, warn: stderr, error: stderr };

globalThis.navigator ??= { hardwareConcurrency: 1, userAgent: 'node' };
globalThis.self ??= globalThis;
globalThis.location ??= { href: import.meta.url };

const WORKER_PRELUDE = `
const { parentPort } = require('node:worker_threads');
globalThis.self = globalThis;
Object.defineProperty(globalThis, 'navigator', { value: { hardwareConcurrency: 1, userAgent: 'node', gpu: { requestAdapter: async () => null } } });
globalThis.onmessage = null;
globalThis.postMessage = (m, t) => parentPort.postMessage(m, t);
parentPort.on('message', (data) => globalThis.onmessage?.({ data }));
`;
// Worker's constructor is sync but a blob: URL can only be read async, so messages
// posted before the thread exists wait on `ready` (in order).
class NodeWorker {
  constructor(url) {
    this.ready = resolveObjectURL(url).text().then((code) => {
      this.thread = new ThreadWorker(WORKER_PRELUDE + code, { eval: true });
      this.thread.on('message', (data) => this.onmessage?.({ data }));
      this.thread.on('error', (e) => this.onerror?.(e));
    });
  }
  postMessage(m, t) {
    if (this.thread) this.thread.postMessage(m, t);
    else this.ready.then(() => this.thread.postMessage(m, t));
  }
  terminate() {
    this.ready.then(() => this.thread.terminate());
  }
}
globalThis.Worker ??= NodeWorker;
const { Wllama } = await import('@wllama/wllama');

// GPT-2 byte-level BPE: each vocab char stands for one byte.
const byteOfChar = new Map();
for (let b = 0, n = 0; b < 256; b++) {
  const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
  byteOfChar.set(String.fromCodePoint(printable ? b : 256 + n++), b);
}
function ggufTokens(buf) {
  let o = 8; // magic, version
  const u32 = () => ((o += 4), buf.readUInt32LE(o - 4));
  const u64 = () => ((o += 8), Number(buf.readBigUInt64LE(o - 8)));
  const str = () => { const n = u64(); return buf.toString('utf8', (o += n) - n, o); };
  const width = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
  const skip = (t) => {
    if (t === 8) str();
    else if (t === 9) { const et = u32(); for (let n = u64(); n > 0; n--) skip(et); }
    else o += width[t];
  };
  u64(); // tensor count
  for (let kv = u64(); kv > 0; kv--) {
    const key = str();
    const type = u32();
    if (key === 'tokenizer.ggml.tokens') { u32(); return Array.from({ length: u64() }, str); }
    skip(type);
  }
  throw new Error('no tokenizer.ggml.tokens in the GGUF');
}

const fileUrl = (p) => pathToFileURL(require.resolve(p)).href;
const t0 = performance.now();
const gguf = readFileSync(input.gguf);
const wllama = new Wllama(
  { default: fileUrl('@wllama/wllama/esm/wasm/wllama.wasm') },
  { logger, suppressNativeLog: true, cacheManager: {} },
);
wllama.setCompat({
  worker: { code: readFileSync(require.resolve('@wllama/wllama-compat/wasm/wllama.js'), 'utf8') },
  wasm: fileUrl('@wllama/wllama-compat/wasm/wllama.wasm'),
});
const nCtx = Math.max(512, input.prompt_ids.length + input.new_tokens);
await wllama.loadModel([new Blob([gguf])], {
  n_threads: 1, n_gpu_layers: 0, n_parallel: 1, n_ctx: nCtx, flash_attn: false,
});
const loadMs = performance.now() - t0;

const vocab = ggufTokens(gguf);
const prompt = Buffer.from(input.prompt_ids.flatMap((id) =>
  [...vocab[id]].flatMap((c) => byteOfChar.get(c) ?? [...Buffer.from(c)]))).toString('utf8');

const complete = (maxTokens, extra = {}) => wllama.createCompletion({
  prompt,
  max_tokens: maxTokens,
  temperature: 0, top_k: 1, ignore_eos: true, cache_prompt: false,
  ...extra,
});
async function timed(maxTokens) {
  const t = performance.now();
  const res = await complete(maxTokens);
  return { ms: performance.now() - t, timings: res.timings };
}

const T = input.new_tokens;
const warm = await complete(T, { logprobs: 1 });
const runs = [];
for (let r = 0; r < input.runs; r++) {
  const one = await timed(1);
  const all = await timed(T);
  runs.push({ prefillMs: one.ms, msPerToken: (all.ms - one.ms) / (T - 1), timings: all.timings });
}
const promptTokens = warm.usage.prompt_tokens;

const notes = ['compat build (wasm32, Asyncify, SIMD128)', 'prompt given as detokenized text', 'end-of-generation tokens masked (ignore_eos)'];
if (promptTokens !== input.prompt_ids.length) {
  notes.push(`llama.cpp re-tokenized the prompt to ${promptTokens} tokens, not ${input.prompt_ids.length}`);
}
const { version } = JSON.parse(readFileSync(require.resolve('@wllama/wllama/package.json'), 'utf8'));
process.stdout.write(JSON.stringify({
  package: '@wllama/wllama',
  version,
  threads: wllama.getNumThreads(),
  prompt_tokens: promptTokens,
  prefill_ms: median(runs.map((r) => r.prefillMs)),
  decode_ms_per_token: median(runs.map((r) => r.msPerToken)),
  greedy_ids: warm.choices[0].logprobs.content.map((p) => p.id),
  load_ms: loadMs,
  engine_prefill_ms: median(runs.map((r) => r.timings.prompt_ms)),
  engine_decode_ms_per_token: median(runs.map((r) => r.timings.predicted_per_token_ms)),
  note: notes.join('; '),
}) + '\n');
await wllama.exit();
