// The Deno server: the worker's own build -- the same wasm module workerd
// runs (../index_bg.wasm), with the JS glue worker-build made for it
// (./index.js, its wasm import rewritten as a source-phase import by
// scripts/build-worker) -- served by Deno.serve. Every route is the Rust
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

const INTERNAL_ERROR = JSON.stringify({
  error: {
    type: "server_error",
    code: "internal_error",
    message: "the server failed to process the request; it has been logged",
    param: null,
  },
});

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
// no request's promise sees it: it arrives here as an uncaught error, and
// every request in flight on that instance is answered 500 (worker-build's
// glue makes a fresh instance for the next). Deno would otherwise end the
// process on an uncaught error; the server keeps serving instead.
const inFlight = new Set();
addEventListener("error", (event) => {
  event.preventDefault();
  console.error(JSON.stringify({ status: 500, error: `uncaught: ${event.error ?? event.message}` }));
  if (event.error instanceof WebAssembly.RuntimeError) {
    for (const fail of inFlight) fail(event.error);
  }
});
addEventListener("unhandledrejection", (event) => {
  event.preventDefault();
  console.error(JSON.stringify({ status: 500, error: `unhandled rejection: ${event.reason}` }));
});

async function serve(request, info) {
  // The client's address, as Cloudflare's edge sets it (the rate limiter's
  // bucket without API keys): never what the client sent.
  const headers = new Headers(request.headers);
  headers.set("cf-connecting-ip", info.remoteAddr.hostname);
  const forwarded = new Request(request, { headers });
  let fail;
  const aborted = new Promise((_, reject) => {
    fail = reject;
  });
  inFlight.add(fail);
  try {
    return await Promise.race([new Worker(ctx, env).fetch(forwarded), aborted]);
  } catch (e) {
    console.error(
      JSON.stringify({
        method: request.method,
        path: new URL(request.url).pathname,
        status: 500,
        error: `the worker failed: ${e}`,
      }),
    );
    return new Response(INTERNAL_ERROR, {
      status: 500,
      headers: { "content-type": "application/json" },
    });
  } finally {
    inFlight.delete(fail);
  }
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
