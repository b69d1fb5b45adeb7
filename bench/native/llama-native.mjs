// The native anchor for the sharded chat model: llama.cpp's own CPU build, as npm
// `node-llama-cpp` ships it prebuilt (its @node-llama-cpp/linux-x64 package: one
// libggml-cpu-<variant>.so per x86 level, the best one this CPU runs is loaded), on the
// very GGUF the shards are packed from, fed the same token ids (no text, no template),
// greedy. The limit issue 27 asks our wasm in workerd to reach.
//
// stdin: {"gguf": "<path>", "threads": [1, 2], "runs": N,
//         "cases": [{"name", "prompt_ids": [ids], "new_tokens": T}]}
// stdout: {"package", "version", "llama_cpp_release", "build_type", "cpu_backend",
//          "system_info", "load_ms", "gguf_bytes", "eog_tokens_masked",
//          "rows": [{"threads", "context_threads", "cases": [{"name", "prompt_tokens",
//                   "first_token_ms", "prefill_ms", "prefill_tokens_per_s", "prefill_cpu_ms",
//                   "decode_ms_per_token", "decode_cpu_ms_per_token", "decoded_tokens",
//                   "greedy_ids"}]}],
//          "note"} or {"error": "<why it cannot run here>", ...} (exit 0 either way, so the
// bench prints the reason in its row instead of dropping it).
//
// Nothing here may reach the network or a compiler: getLlama({gpu: false, build: "never",
// skipDownload: true}) loads only the prebuilt binaries already in node_modules (it
// throws instead of cloning or building llama.cpp); NODE_LLAMA_CPP_SKIP_DOWNLOAD is set
// too; the model is a local file (no model URI, no resolver).
//
// Run, per thread count (a context of its own, `threads` as both ideal and minimum, the
// Llama's maxThreads the largest of them), per case: one untimed warm-up pass of the
// prompt + T tokens, then N timed runs, each from an empty context (clearHistory):
// - prefill_ms: evaluateWithoutGeneratingNewTokens(prompt): the prompt's pass alone (no
//   logits read, no sample), so prefill_tokens_per_s = prompt tokens / it; prefill_cpu_ms
//   the same span in CPU time;
// - first_token_ms: evaluate(prompt) until its first token (the prompt's pass, the
//   head's logits and the greedy pick): llama.cpp's time to first token, no HTTP;
// - decode_ms_per_token: (time of token T - time of token 1) / (T - 1) in the same
//   generator: one single-token pass with the cache plus its greedy pick, per token;
//   decode_cpu_ms_per_token: the same span in the process's CPU time (process.cpuUsage:
//   user + system of every thread, llama.cpp's included), which a busy machine does not
//   inflate as it does wall time (with 2 threads it counts both, spinning included).
// Medians over the N runs. Greedy = temperature 0 (llama.cpp's argmax sampler); the
// end-of-generation tokens are banned (token bias "never", as llama-server's ignore_eos)
// so every run decodes T tokens: greedy_ids are the argmax over the other tokens.
// flashAttention off (its CPU path is what llama.cpp's CLI defaults to for this model).
process.env.NODE_LLAMA_CPP_SKIP_DOWNLOAD ??= 'true';
import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';

const input = JSON.parse(readFileSync(0, 'utf8'));
const require = createRequire(import.meta.url);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');

let version = null;
try {
  // The package's exports hide its package.json: read it beside the resolved entry.
  const entry = require.resolve('node-llama-cpp');
  ({ version } = JSON.parse(readFileSync(`${entry.slice(0, entry.lastIndexOf('/node_modules/node-llama-cpp/') + 29)}/package.json`, 'utf8')));
} catch (e) {
  out({ error: `node-llama-cpp is not installed (${e.code ?? e.message}): run scripts/bench, which installs bench/native` });
  process.exit(0);
}

// llama.cpp's log lines: errors to stderr, the last few into an error report.
const logs = [];
const logger = (level, message) => {
  logs.push(message);
  if (level === 'error' || level === 'fatal') console.error(`llama.cpp: ${message.trimEnd()}`);
};

let llama, model;
const t0 = performance.now();
try {
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  llama = await getLlama({
    gpu: false,
    build: 'never',
    skipDownload: true,
    usePrebuiltBinaries: true,
    progressLogs: false,
    maxThreads: Math.max(...input.threads),
    logLevel: LlamaLogLevel.info,
    logger,
  });
  model = await llama.loadModel({ modelPath: input.gguf, gpuLayers: 0, useMmap: true });
} catch (e) {
  out({
    package: 'node-llama-cpp', version,
    error: `node-llama-cpp ${version} cannot run here: ${String(e?.message ?? e).split('\n')[0]}`,
    log_tail: logs.slice(-5).map((l) => l.trimEnd()),
  });
  process.exit(0);
}
const loadMs = performance.now() - t0;
// The CPU variant ggml loaded (one .so per x86 level): from this process's mappings.
let backend = null;
try {
  backend = readFileSync('/proc/self/maps', 'utf8').match(/\/(libggml-cpu-[\w.-]+\.so)/)?.[1] ?? null;
} catch {}

// Every end-of-generation token of the vocabulary, banned below.
const { TokenBias } = await import('node-llama-cpp');
const vocab = model.fileInfo?.metadata?.tokenizer?.ggml?.tokens?.length ?? 0;
const eog = [];
for (let t = 0; t < vocab; t++) if (model.isEogToken(t)) eog.push(t);
const bias = new TokenBias(model.tokenizer);
for (const t of eog) bias.set(t, 'never');

const cpuMs = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
const maxPrompt = Math.max(...input.cases.map((c) => c.prompt_ids.length + c.new_tokens));
const rows = [];
for (const threads of input.threads) {
  const context = await model.createContext({
    contextSize: Math.max(512, maxPrompt + 8),
    batchSize: Math.max(512, maxPrompt),
    sequences: 1,
    threads: { ideal: threads, min: threads },
    flashAttention: false,
  });
  const seq = context.getSequence();
  const options = { temperature: 0, tokenBias: bias };
  // One pass of `ids` + n tokens: the first token's time, the last's (wall and CPU),
  // the ids.
  async function generate(ids, n) {
    await seq.clearHistory();
    const got = [];
    const t = performance.now();
    let first = 0, last = 0, cpuFirst = 0, cpuLast = 0;
    for await (const token of seq.evaluate(ids, options)) {
      last = performance.now() - t;
      cpuLast = cpuMs();
      if (got.length === 0) [first, cpuFirst] = [last, cpuLast];
      got.push(token);
      if (got.length >= n) break;
    }
    return { first, last, cpu: cpuLast - cpuFirst, got };
  }
  async function prefill(ids) {
    await seq.clearHistory();
    const [t, c] = [performance.now(), cpuMs()];
    await seq.evaluateWithoutGeneratingNewTokens(ids);
    return { ms: performance.now() - t, cpu: cpuMs() - c };
  }
  const cases = [];
  for (const c of input.cases) {
    const ids = c.prompt_ids;
    const T = c.new_tokens;
    const warm = await generate(ids, T);
    await prefill(ids);
    const runs = [];
    for (let r = 0; r < input.runs; r++) {
      const p = await prefill(ids);
      const g = await generate(ids, T);
      const steps = Math.max(1, g.got.length - 1);
      runs.push({ prefill: p.ms, prefillCpu: p.cpu, first: g.first, per: (g.last - g.first) / steps, cpu: g.cpu / steps, n: g.got.length });
    }
    const prefillMs = median(runs.map((r) => r.prefill));
    cases.push({
      name: c.name,
      prompt_tokens: ids.length,
      prefill_ms: prefillMs,
      prefill_tokens_per_s: (ids.length * 1000) / prefillMs,
      prefill_cpu_ms: median(runs.map((r) => r.prefillCpu)),
      first_token_ms: median(runs.map((r) => r.first)),
      decode_ms_per_token: T > 1 ? median(runs.map((r) => r.per)) : null,
      decode_cpu_ms_per_token: T > 1 ? median(runs.map((r) => r.cpu)) : null,
      decoded_tokens: Math.min(...runs.map((r) => r.n)),
      greedy_ids: warm.got,
    });
  }
  rows.push({ threads, context_threads: context.currentThreads ?? threads, cases });
  await context.dispose();
}

out({
  package: 'node-llama-cpp',
  version,
  llama_cpp_release: llama.llamaCppRelease?.release ?? null,
  build_type: llama.buildType,
  gpu: llama.gpu,
  cpu_backend: backend,
  system_info: llama.systemInfo,
  load_ms: loadMs,
  gguf_bytes: statSync(input.gguf).size,
  eog_tokens_masked: eog,
  rows,
  note: 'prebuilt CPU binaries from the npm registry (build "never", no download); prompt fed as token ids; greedy; end-of-generation tokens banned',
});
await model.dispose();
await llama.dispose();
