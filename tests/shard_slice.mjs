// A vocabulary slice's Worker logic (shard/pass.mjs, sliceEntrypoint) on the
// shard module, in Node: run by tests/sharded.rs, which packs the slice
// (rows of SmolLM2's embedding and head) into the directory given, beside
// pass.mjs and shard.wasm, and passes the token ids and a hidden state as
// JSON. Prints what the slice answered as JSON; the Rust check compares it
// with the engine's VocabSlice natively, bit for bit.
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";

const [dir, input] = [process.argv[2], JSON.parse(process.argv[3])];
class RpcTarget {}
class WorkerEntrypoint {
  constructor(ctx, env) {
    this.ctx = ctx;
    this.env = env;
  }
}
const { shardEntrypoint } = await import(pathToFileURL(`${dir}/pass.mjs`).href);
const module = await WebAssembly.compile(await readFile(`${dir}/shard.wasm`));
const weights = (await readFile(`${dir}/weights.bin`)).buffer;
const Entry = shardEntrypoint(module, weights, { WorkerEntrypoint, RpcTarget });
const entry = new Entry({}, {});
const failure = async (f) => {
  try {
    await f();
    return null;
  } catch (e) {
    return String(e.message ?? e);
  }
};
const opened = await entry.begin("", 8, Uint32Array.from(input.ids), "");
const pass = opened.pass;
// A view into a larger buffer, as a structured clone may hand one over.
const padded = new Float32Array(input.hidden.length + 3);
padded.set(input.hidden, 3);
const hidden = padded.subarray(3);
const embedded = await pass.embed(Uint32Array.from(input.ids));
const best = await pass.forward(hidden, 0, 5);
const all = await pass.forward(hidden, 0, 0);
const out = {
  cached: opened.cached,
  embed: [...embedded.out],
  best_logits: [...best.out],
  best_ids: [...best.ids],
  logits: [...all.out],
  out_of_range: await failure(() => pass.embed(Uint32Array.of(input.outside))),
  wrong_size: await failure(() => pass.forward(new Float32Array(7), 0, 5)),
  not_ids: await failure(() => pass.embed([1, 2])),
  info: await (await entry.fetch()).json(),
};
pass.close();
out.after_close = await failure(() => pass.embed(Uint32Array.from(input.ids)));
console.log(JSON.stringify(out));
