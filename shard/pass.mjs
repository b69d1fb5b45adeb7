// A shard Worker's logic: one group of a model's layers (pipeline/src/plan.rs),
// run by the shard module (shard/src, the decoder engine alone) on the
// weights of this shard. scripts/build-shards puts this file, entry.mjs,
// the module and the weights of each planned shard into
// build/shards/<script>/.
//
// The front worker calls `begin(traceparent, tokens, prompt, scope)` once
// per turn over its service binding and gets `{ pass, cached }`: a `Pass`
// (an RpcTarget holding this shard's key/value cache for the turn) and how
// many of the prompt's first tokens that cache already holds (kept from an
// earlier turn of the conversation, shard/src/shard.rs). Then
// `forward(input, at)` once per model pass: token ids (Uint32Array) into
// the first shard, hidden states (Float32Array) between shards, logits out
// of the last, the input's first row at position `at`. Calls on the stub
// are not new invocations. `close(fed)` ends the turn and keeps the cache
// for a next turn that starts with the `fed` ids. This file moves bytes in and out of the module; it does no
// math. It logs one JSON line per pass when the pass ends: trace id, layers,
// calls, tokens and its own time, so a slow reply shows which isolate was
// slow.
//
// The host hands in what workerd gives the Worker as modules -- the shard
// module (a WebAssembly.Module), its weights (an ArrayBuffer) and the
// `cloudflare:workers` base classes -- and gets the entrypoint class:
// shard/entry.mjs on workerd, src/js/deno/shards.mjs under the Deno server.
export function shardEntrypoint(shardModule, weights, { WorkerEntrypoint, RpcTarget }) {
  // The module instance, made on the first pass of the isolate (not at
  // startup: copying tens of MB counts against the 1 s startup limit).
  let shard;
  let loadMs = 0;
  let weightsBytes = 0;

  function text(e, ptr, len) {
    return new TextDecoder().decode(new Uint8Array(e.memory.buffer, ptr, len));
  }

  function lastError(e) {
    return text(e, e.error_ptr(), e.error_len());
  }

  // TOKEN_BUDGET (the shard's wrangler.toml): the tokens the open passes may
  // reserve in all, what the plan budgeted the isolate's caches for.
  function instance(env) {
    if (shard) return shard;
    const started = performance.now();
    const e = new WebAssembly.Instance(shardModule, {}).exports;
    const bytes = new Uint8Array(weights);
    weightsBytes = bytes.length;
    const ptr = e.weights_alloc(bytes.length);
    new Uint8Array(e.memory.buffer, ptr, bytes.length).set(bytes);
    const budget = Number.parseInt(env?.TOKEN_BUDGET ?? "0", 10);
    if (e.load(ptr, bytes.length, budget > 0 ? budget : 0) !== 0) {
      throw new Error(`the shard's weights do not load: ${lastError(e)}`);
    }
    if (e.info() !== 0) throw new Error(lastError(e));
    const info = JSON.parse(lastError(e));
    shard = { e, info };
    loadMs = performance.now() - started;
    return shard;
  }

  function layers(info) {
    return `${info.part.first_layer}..${info.part.end_layer}`;
  }

  // Open passes, oldest first, and the opens waiting for one to end.
  const openPasses = new Set();
  const waiting = [];
  // A pass unused this long is abandoned (its caller went away without
  // closing it): a new pass may take its place.
  const IDLE_MS = 60_000;
  // The longest an open waits for a free place before it is refused.
  const WAIT_MS = 5_000;

  function freed() {
    waiting.shift()?.();
  }

  // Writes `words` (a Uint32Array) and then `bytes` into the module's input
  // buffer.
  function writeInput(e, words, bytes = new Uint8Array(0)) {
    const ptr = e.input_buffer(words.byteLength + bytes.length);
    const view = new Uint8Array(e.memory.buffer, ptr, words.byteLength + bytes.length);
    view.set(new Uint8Array(words.buffer, words.byteOffset, words.byteLength));
    view.set(bytes, words.byteLength);
  }

  // A pass of at most `tokens` fed tokens for `prompt` (token ids) in `scope`
  // (the caller's key: kept caches are matched within it) once the isolate's
  // budget has room for it: waits for passes to end (bounded), and reclaims
  // one left idle.
  async function newPass(traceparent, tokens, prompt, scope, env) {
    const { e, info } = instance(env);
    const deadline = Date.now() + WAIT_MS;
    const asked = Number.isInteger(tokens) && tokens > 0 ? tokens : info.config.context;
    const ids = prompt instanceof Uint32Array ? prompt : new Uint32Array(0);
    const scopeBytes = new TextEncoder().encode(typeof scope === "string" ? scope : "");
    for (;;) {
      // Rewritten on every try: another pass may have used the buffer.
      writeInput(e, ids, scopeBytes);
      const handle = e.open(asked, ids.length, scopeBytes.length);
      if (handle !== 0) {
        const cached = e.cached();
        return { pass: new Pass(handle, traceparent, cached), cached };
      }
      // Refused for another reason than room (a reservation over the context).
      if (asked <= e.free_tokens() || asked > info.budget_tokens) throw new Error(lastError(e));
      const idle = [...openPasses].find((p) => Date.now() - p.lastUsed > IDLE_MS);
      if (idle) {
        idle.close();
        continue;
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(lastError(e));
      await new Promise((resolve) => {
        waiting.push(resolve);
        setTimeout(resolve, left);
      });
    }
  }

  class Pass extends RpcTarget {
    constructor(handle, traceparent, cached) {
      super();
      const { info } = instance();
      this.handle = handle;
      this.reused = cached;
      // The next input's position, if the caller does not say.
      this.position = cached;
      this.lastUsed = Date.now();
      openPasses.add(this);
      this.trace = /^00-([0-9a-f]{32})-/.exec(traceparent ?? "")?.[1] ?? null;
      this.layers = layers(info);
      this.calls = 0;
      this.tokens = 0;
      this.ms = 0;
      this.closed = false;
    }

    // One model pass: token ids or hidden states in, the first at position
    // `at`; hidden states or logits out, with this shard's own time in ms.
    forward(input, at) {
      if (this.closed) throw new Error("this pass is closed");
      const started = performance.now();
      const { e, info } = instance();
      const isTokens = input instanceof Uint32Array;
      if (!isTokens && !(input instanceof Float32Array)) {
        throw new TypeError("forward takes a Uint32Array of token ids or a Float32Array of hidden states");
      }
      writeInput(e, input);
      const position = Number.isInteger(at) && at >= 0 ? at : this.position;
      let status;
      try {
        status = e.step(this.handle, position, isTokens ? 1 : 0, input.length);
      } catch (err) {
        // A trap leaves the instance unusable: the next pass gets a new one.
        if (err instanceof WebAssembly.RuntimeError) shard = undefined;
        throw err;
      }
      if (status !== 0) throw new Error(lastError(e));
      const out = new Float32Array(e.memory.buffer, e.output_ptr(), e.output_len()).slice();
      const ms = performance.now() - started;
      const rows = isTokens ? input.length : input.length / info.config.dims;
      this.calls += 1;
      this.lastUsed = Date.now();
      this.position = position + rows;
      this.tokens += rows;
      this.ms += ms;
      return { out, ms };
    }

    // Ends the pass and logs it. With `fed` (a Uint32Array: every token id
    // the turn fed, prompt first) its cache is kept for a next turn that
    // starts with them; else freed. The front calls this at the end of a
    // turn; disposal of the stub (or reclaiming it idle) frees it.
    close(fed) {
      if (this.closed) return;
      this.closed = true;
      openPasses.delete(this);
      if (shard) {
        const keep = fed instanceof Uint32Array ? fed : new Uint32Array(0);
        writeInput(shard.e, keep);
        shard.e.close(this.handle, keep.length);
      }
      freed();
      console.log(
        JSON.stringify({
          shard: true,
          trace: this.trace,
          layers: this.layers,
          calls: this.calls,
          tokens: this.tokens,
          reused: this.reused,
          ms: Math.round(this.ms * 1000) / 1000,
        }),
      );
    }

    [Symbol.dispose]() {
      this.close();
    }
  }

  return class extends WorkerEntrypoint {
    // A turn's pass: `tokens` is the most it will feed (prompt + max_tokens),
    // `prompt` its prompt's token ids, `scope` the caller's key (or "").
    begin(traceparent, tokens, prompt, scope) {
      return newPass(traceparent, tokens, prompt, scope, this.env);
    }

    // The pass alone, no cache kept: what a front worker deployed before
    // `begin` calls while the shards it binds are already newer.
    async open(traceparent, tokens) {
      return (await newPass(traceparent, tokens, undefined, "", this.env)).pass;
    }

    // What this shard is, for operators: `GET /` on the shard Worker.
    async fetch() {
      try {
        const { e, info } = instance(this.env);
        if (e.info() !== 0) throw new Error(lastError(e));
        return Response.json({
          ...JSON.parse(lastError(e)),
          layers: layers(info),
          load_ms: loadMs,
          // Linear memory only grows: its size now is the isolate's peak.
          linear_memory_bytes: e.memory.buffer.byteLength,
          weights_bytes: weightsBytes,
        });
      } catch (err) {
        return Response.json(
          { error: { type: "server_error", code: "shard_unavailable", message: String(err), param: null } },
          { status: 503 },
        );
      }
    }
  }
}
