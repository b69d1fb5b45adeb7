// The peer in the benchmark: onnxruntime-web (npm, wasm backend, one thread,
// SIMD) running the very ONNX file edgeinfer embeds, in Node, on the same
// token rows. bench/edge.rs runs it and puts its times beside ours.
//
// stdin: {"model": "<path to .onnx>", "runs": N, "cases": [{"name", "rows": [..]}]}
// stdout: {"ort_version", "load_ms", "cases": [{"name", "first_ms", "p50_ms", "p99_ms"}]}
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import * as ort from 'onnxruntime-web';

const input = JSON.parse(readFileSync(0, 'utf8'));
ort.env.wasm.numThreads = 1;
ort.env.logLevel = 'error';

const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];

const t0 = performance.now();
const session = await ort.InferenceSession.create(readFileSync(input.model), {
  executionProviders: ['wasm'],
  graphOptimizationLevel: 'all',
});
const loadMs = performance.now() - t0;

const cases = [];
for (const c of input.cases) {
  const n = c.rows.length;
  const feeds = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from(c.rows.map(BigInt)), [1, n]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]),
  };
  let t = performance.now();
  await session.run(feeds);
  const firstMs = performance.now() - t;
  for (let i = 0; i < 3; i++) await session.run(feeds);
  const times = [];
  for (let i = 0; i < input.runs; i++) {
    t = performance.now();
    await session.run(feeds);
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  cases.push({ name: c.name, first_ms: firstMs, p50_ms: quantile(times, 0.5), p99_ms: quantile(times, 0.99) });
}
const { version } = JSON.parse(readFileSync(new URL('../node_modules/onnxruntime-web/package.json', import.meta.url), 'utf8'));
process.stdout.write(JSON.stringify({ ort_version: version, load_ms: loadMs, cases }) + '\n');
