// The shard Workers of a sharded model, under the Deno server: each
// planned shard (../shards/plan.json, written by scripts/build-shards) runs
// its own logic (../shards/<script>/pass.mjs, the file workerd runs) on its
// own instance of the shard module, in this process, behind the binding
// the front's Rust code calls (`begin`, then `forward` and `close` on the
// pass it returns). Calls are made asynchronous and their typed arrays
// copied, as over workerd's RPC, so the Rust side sees no difference.
//
// A Deno process has no 128 MB isolate limit, so the shards need not be
// apart; they stay in their plan's groups so the same code runs (and is
// tested) on both platforms. Their weights are read when the server
// starts; each shard's module instance is made on its first pass.

import { RpcTarget, WorkerEntrypoint } from "cloudflare:workers";

const shards = new URL("../shards/", import.meta.url);

// The class is named as workerd's, because workers-rs checks a binding's
// constructor name.
class Fetcher {
  #entry;

  constructor(entry) {
    this.#entry = entry;
  }

  // `{ pass, cached }`, or the shard's `{ refused }` as it is.
  async begin(traceparent, tokens, prompt, scope) {
    const opened = await this.#entry.begin(traceparent, tokens, prompt?.slice(), scope);
    return opened.pass
      ? { pass: stub(opened.pass), cached: opened.cached, public_tokens: opened.public_tokens }
      : opened;
  }

  async open(traceparent, tokens) {
    return stub(await this.#entry.open(traceparent, tokens));
  }

  fetch() {
    return this.#entry.fetch();
  }
}

function stub(pass) {
  return {
    forward: async (input, at, best) => {
      const { out, ids, ms } = await pass.forward(input.slice(), at, best);
      return ids ? { out, ids, ms } : { out, ms };
    },
    // A vocabulary slice's (shard/pass.mjs, sliceEntrypoint).
    embed: async (ids) => {
      const { out, ms } = await pass.embed(ids.slice());
      return { out, ms };
    },
    close: async (fed) => pass.close(fed?.slice()),
    touch: async (late) => pass.touch(late),
    [Symbol.dispose]: () => pass[Symbol.dispose](),
  };
}

// The bindings of every planned shard, by the names wrangler.toml binds
// them under; none when no shards were built (a sharded model then
// answers 503).
export async function shardBindings() {
  let plan;
  try {
    plan = JSON.parse(await Deno.readTextFile(new URL("plan.json", shards)));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return {};
    throw e;
  }
  const { shardEntrypoint } = await import(new URL(`${plan[0].script}/pass.mjs`, shards).href);
  const bindings = {};
  for (const shard of plan) {
    const dir = new URL(`${shard.script}/`, shards);
    const module = await WebAssembly.compile(await Deno.readFile(new URL("shard.wasm", dir)));
    const weights = (await Deno.readFile(new URL("weights.bin", dir))).buffer;
    const Entry = shardEntrypoint(module, weights, { WorkerEntrypoint, RpcTarget });
    const env = { TOKEN_BUDGET: String(shard.token_budget) };
    bindings[shard.binding] = new Fetcher(new Entry({ waitUntil() {} }, env));
  }
  return bindings;
}
