// The Deno server: the worker's own build -- the same wasm module workerd
// runs (../index_bg.wasm), with the same bundle of src/js/worker.mjs and
// wasm-bindgen's glue (./index.js, its wasm import rewritten as a
// source-phase import by scripts/build-worker) -- served by Deno.serve. Every route is the Rust
// worker's; this file gives it what workerd would: an `env` with its
// bindings (Deno KV for the cache and the sessions, the object classes of
// the same module as in-process Durable Objects, the shard Workers of a
// sharded model loaded in this process) and a `ctx`. It does no math and
// makes no API decision.
//
// Settings come from the environment, by the names of wrangler.toml's
// [vars] and secrets (API_KEYS, RATE_LIMIT_PER_MINUTE, ...), and:
//   PORT (8787), EDGEINFER_ADDRESS (127.0.0.1): where to listen (Deno
//     Deploy ignores both);
//   EDGEINFER_KV: the Deno KV file; unset, Deno's default (on Deno Deploy,
//     the deployment's KV);
//   EDGEINFER_SHARDS: "off" leaves the shard Workers out (a sharded model
//     then answers 503, as on workerd with a shard down);
//   EDGEINFER_CACHE: "off" leaves the cache out (every answer computed, as
//     by a Worker without a CACHE binding; sessions stay in Deno KV).

import Worker, * as exports from "./index.js";
import { DurableObjectNamespace } from "./objects.mjs";
import { KvNamespace, SessionKv } from "./store.mjs";
import { shardBindings } from "./shards.mjs";

function setting(name, fallback) {
  const value = Deno.env.get(name);
  return value === undefined || value === "" ? fallback : value;
}

const kvPath = setting("EDGEINFER_KV", undefined);
const kv = await Deno.openKv(kvPath);

const bindings = {
  ...(setting("EDGEINFER_CACHE", "on") === "off" ? {} : { CACHE: new KvNamespace(kv) }),
  SESSION_KV: new SessionKv(kv),
  ...(setting("EDGEINFER_SHARDS", "on") === "off" ? {} : await shardBindings()),
};
// Bindings first, then the process environment for every other name the
// worker reads (its vars and secrets).
const env = new Proxy(bindings, {
  get(target, name) {
    if (typeof name !== "string") return undefined;
    return name in target ? target[name] : Deno.env.get(name);
  },
  has(target, name) {
    return typeof name === "string" && (name in target || Deno.env.get(name) !== undefined);
  },
});
bindings.SESSIONS = new DurableObjectNamespace((state) => new exports.ChatSession(state, env));
bindings.RATE_LIMITER = new DurableObjectNamespace((state) => new exports.RateLimiter(state, env));

// Work left running after a response (a cache write): awaited by nobody,
// but its failure is logged by the Rust code that started it.
const ctx = {
  waitUntil(promise) {
    Promise.resolve(promise).catch((e) => console.error(JSON.stringify({ wait_until: String(e) })));
  },
  passThroughOnException() {},
  props: {},
};

// A panic traps the wasm instance inside wasm-bindgen's task queue, where
// no request's promise sees it: it arrives as an uncaught error, which the
// worker's own listener (src/js/worker.mjs) turns into a 500 for every
// request in flight on that instance, and a fresh instance for the next.
// Deno would also end the process on an uncaught error; the server logs it
// and keeps serving instead.
addEventListener("error", (event) => {
  event.preventDefault();
  console.error(JSON.stringify({ status: 500, error: `uncaught: ${event.error ?? event.message}` }));
});
addEventListener("unhandledrejection", (event) => {
  event.preventDefault();
  console.error(JSON.stringify({ status: 500, error: `unhandled rejection: ${event.reason}` }));
});

function serve(request, info) {
  // The client's address, as Cloudflare's edge sets it (the rate limiter's
  // bucket without API keys): never what the client sent.
  const headers = new Headers(request.headers);
  headers.set("cf-connecting-ip", info.remoteAddr.hostname);
  return new Worker(ctx, env).fetch(new Request(request, { headers }));
}

const port = Number.parseInt(setting("PORT", "8787"), 10);
const hostname = setting("EDGEINFER_ADDRESS", "127.0.0.1");
Deno.serve(
  {
    port,
    hostname,
    onListen: ({ hostname, port }) =>
      console.log(JSON.stringify({ listening: `http://${hostname}:${port}`, kv: kvPath ?? "default" })),
  },
  serve,
);
