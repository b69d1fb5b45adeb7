import { readFileSync } from 'node:fs';
import { resolveObjectURL } from 'node:buffer';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import * as threads from 'node:worker_threads';

const require = createRequire(import.meta.url);
const input = JSON.parse(readFileSync(0, 'utf8'));

globalThis.navigator ??= { hardwareConcurrency: 1, userAgent: 'node' };
globalThis.self ??= globalThis;
globalThis.location ??= { href: import.meta.url };

const PRELUDE = `
const { parentPort } = require('node:worker_threads');
globalThis.self = globalThis;
globalThis.navigator ??= { hardwareConcurrency: 1, userAgent: 'node', gpu: { requestAdapter: async () => null } };
globalThis.onmessage = null;
globalThis.postMessage = (m, t) => parentPort.postMessage(m, t);
parentPort.on('message', (data) => globalThis.onmessage?.({ data }));
`;
class NodeWorker {
  constructor(url) {
    this.onmessage = null;
    this.onerror = null;
    this.ready = resolveObjectURL(url).text().then((code) => {
      const w = new threads.Worker(PRELUDE + code, { eval: true });
      w.on('message', (data) => this.onmessage?.({ data }));
      w.on('error', (e) => this.onerror?.(e));
      return w;
    });
  }
  postMessage(m, t) { this.ready.then((w) => w.postMessage(m, t)); }
  terminate() { this.ready.then((w) => w.terminate()); }
}
globalThis.Worker = NodeWorker;

const { Wllama } = await import('@wllama/wllama');
const log = (...a) => console.error(...a);
const logger = { debug: log, log, warn: log, error: log };

const fileUrl = (p) => new URL(p, import.meta.url).href;
const wllama = new Wllama({ default: fileUrl('../node_modules/@wllama/wllama/esm/wasm/wllama.wasm') }, { logger, cacheManager: {} });
wllama.setCompat({
  worker: { code: readFileSync(require.resolve('@wllama/wllama-compat/wasm/wllama.js'), 'utf8') },
  wasm: fileUrl('../node_modules/@wllama/wllama-compat/wasm/wllama.wasm'),
});

const t0 = performance.now();
await wllama.loadModel([new Blob([readFileSync(input.gguf)])], { n_threads: 1, n_gpu_layers: 0, n_parallel: 1, n_ctx: 512, flash_attn: false });
log('load', performance.now() - t0);

const chunks = [];
const res = await wllama.createCompletion({
  prompt: input.prompt_text,
  max_tokens: 4,
  temperature: 0, top_k: 1, ignore_eos: true, cache_prompt: false,
  logprobs: 1, n_probs: 1, return_tokens: true,
  stream: true,
  onData: (c) => chunks.push([performance.now(), c]),
});
log(JSON.stringify(chunks.slice(0, 3)), JSON.stringify(chunks.at(-1)));
await wllama.exit();
