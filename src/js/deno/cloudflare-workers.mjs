// What the worker's modules import from `cloudflare:workers`, for Deno
// (deno.json maps the specifier here). On workerd these base classes give
// a class RPC and a Durable Object's runtime hooks; under the Deno server
// every call is an ordinary in-process call (src/js/deno/objects.mjs and
// shards.mjs make them asynchronous, as RPC is), so they only keep what
// the runtime would have passed to their constructors.

export class WorkerEntrypoint {
  constructor(ctx, env) {
    this.ctx = ctx;
    this.env = env;
  }
}

export class DurableObject {
  constructor(ctx, env) {
    this.ctx = ctx;
    this.env = env;
  }
}

export class RpcTarget {}
