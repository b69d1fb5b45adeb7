// A shard Worker's logic (shard/pass.mjs) through a wasm trap, in Node:
// run by tests/sharded.rs on a built shard (its directory is the argument).
// The module cannot be made to trap from outside (no request path panics),
// so its instances are wrapped here: `step_batch` throws a
// WebAssembly.RuntimeError once when told to, as a trap does. Prints what
// happened as JSON; the Rust check judges it.
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";

const dir = process.argv[2];
let trapNext = false;
const Instance = WebAssembly.Instance;
WebAssembly.Instance = function (module, imports) {
  const real = new Instance(module, imports);
  const exports = { ...real.exports };
  exports.step_batch = (...args) => {
    if (trapNext) {
      trapNext = false;
      throw new WebAssembly.RuntimeError("unreachable (a test's trap)");
    }
    return real.exports.step_batch(...args);
  };
  return { exports };
};

class RpcTarget {}
class WorkerEntrypoint {
  constructor(ctx, env) {
    this.ctx = ctx;
    this.env = env;
  }
}

const { shardEntrypoint } = await import(pathToFileURL(`${dir}/pass.mjs`).href);
const module = await WebAssembly.compile(await readFile(`${dir}/shard.wasm`));
const bytes = await readFile(`${dir}/weights.bin`);
const weights = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
const Entry = shardEntrypoint(module, weights, { WorkerEntrypoint, RpcTarget });
const shard = new Entry({}, { TOKEN_BUDGET: "2048" });

const ids = new Uint32Array([1, 2, 3]);
// The start every caller shares (shard/src/shard.rs PUBLIC), pinned first:
// every admission says the shard holds it, until a trap ends the instance.
const pub = (await shard.begin("", 3, ids, "public")).pass;
await pub.forward(ids, 0);
await pub.close(ids);
const admissions = [];
const open = async () => {
  const opened = await shard.begin("", 16, ids, "");
  admissions.push(opened.public_tokens);
  return opened.pass;
};
const a = await open();
const b = await open();
await a.forward(ids, 0);
// Both passes' calls queued together run as one batch, which traps: both
// are rejected.
trapNext = true;
const queued = await Promise.allSettled([a.forward(new Uint32Array([4]), 3), b.forward(ids, 0)]);
const trapped = queued.every((r) => r.status === "rejected" && r.reason instanceof WebAssembly.RuntimeError);
let afterTrap = null;
try {
  await a.forward(new Uint32Array([4]), 3);
} catch (err) {
  afterTrap = String(err.message);
}
// The next pass is on a new instance; the old stubs' handles are stale.
const c = await open();
a.close();
b[Symbol.dispose]();
let stillOpen = true;
try {
  await c.forward(ids, 0);
} catch {
  stillOpen = false;
}
const info = await (await shard.fetch()).json();
console.log(
  JSON.stringify({
    trapped,
    after_trap: afterTrap,
    handles: [a.handle, b.handle, c.handle],
    still_open: stillOpen,
    instances: info.instances ?? null,
    open_passes: info.open_passes,
    public_tokens: admissions,
  }),
);
