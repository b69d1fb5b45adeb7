// A shard Worker's logic: one group of a model's layers (pipeline/src/plan.rs),
// run by the shard module (shard/src, the decoder engine alone) on the
// weights of this shard. scripts/build-shards puts this file, entry.mjs,
// the module and the weights of each planned shard into
// build/shards/<script>/.
//
// The front worker calls `begin(traceparent, tokens, prompt, scope)` once
// per turn over its service binding and gets `{ pass, cached, public_tokens }`: a `Pass`
// (an RpcTarget holding this shard's key/value cache for the turn) and how
// many of the prompt's first tokens that cache already holds (kept from an
// earlier turn of the conversation, shard/src/shard.rs), or `{ refused: {
// message, retry_after } }` when the shard has no room for it in time.
// Then `forward(input, at, best)` once per model pass: token ids
// (Uint32Array) into the first shard, hidden states (Float32Array) between
// shards, logits out of the last, the input's first row at position `at`;
// it answers (a promise) `{ out, ms }`. With `best` (1 to 256) the last
// shard answers only the best logits, best first, with their token ids:
// `{ out, ids, ms }` (the other shards ignore it). Calls on the stub are not new
// invocations. Calls of different passes that arrive together (concurrent
// conversations) run as one batch, each with the output it gets alone. `close(fed)` ends the turn and
// keeps the cache for a next turn that starts with the `fed` ids; the
// stub's disposal (workerd disposes it when the caller's request ends, or
// the caller disposes it) ends it too, keeping nothing.
//
// Every decision is the module's (shard/src/gate.rs: who is admitted, who
// waits and in what order, when an abandoned pass is reclaimed; ids never
// reused; which queued calls run together): this file moves bytes in and
// out of it, hands it the time, waits when it says wait, wakes whom it
// names, and hands it whatever calls are queued. It does no math. It logs one
// JSON line per pass when the pass ends: trace id, layers, calls, tokens,
// its own time, and how it ended, so a slow reply shows which isolate was
// slow.
//
// The host hands in what workerd gives the Worker as modules -- the shard
// module (a WebAssembly.Module), its weights (an ArrayBuffer) and the
// `cloudflare:workers` base classes -- and gets the entrypoint class:
// shard/entry.mjs on workerd, src/js/deno/shards.mjs under the Deno server.
export function shardEntrypoint(shardModule, weights, { WorkerEntrypoint, RpcTarget }) {
  // A vocabulary slice's weights (engine/src/decoder/vocab.rs) start with
  // their own magic: the same module and entry serve it, as a slice.
  const magic = new TextDecoder().decode(new Uint8Array(weights, 0, Math.min(8, weights.byteLength)));
  if (magic === "EIVOCAB1") return sliceEntrypoint(shardModule, weights, { WorkerEntrypoint, RpcTarget });
  // The module instance, made on the first call of the isolate (not at
  // startup: copying tens of MB counts against the 1 s startup limit), and
  // again after a trap.
  let shard;
  let loadMs = 0;
  let weightsBytes = 0;
  let instances = 0;
  // TOKEN_BUDGET (the shard's wrangler.toml), read once: the tokens the open
  // passes may reserve in all, what the plan budgeted the isolate's caches
  // for.
  let budget;
  // BATCH_HOLD_MS, read once (NaN: not set).
  let holdMs;
  // Past every id an instance handed out: where a new instance starts, so
  // a stub that outlived a trap never names another request's pass.
  let nextId = 1;
  // Requests told to wait, by id: what wakes each.
  const wakers = new Map();
  // Open passes by handle: the module may end one itself (reclaimed
  // unused), and a trap ends them all.
  const passes = new Map();

  function text(e) {
    return new TextDecoder().decode(new Uint8Array(e.memory.buffer, e.text_ptr(), e.text_len()));
  }

  function instance(env) {
    if (shard) return shard;
    const started = performance.now();
    budget ??= Number.parseInt(env?.TOKEN_BUDGET ?? "0", 10);
    const e = new WebAssembly.Instance(shardModule, {}).exports;
    const bytes = new Uint8Array(weights);
    weightsBytes = bytes.length;
    const ptr = e.weights_alloc(bytes.length);
    new Uint8Array(e.memory.buffer, ptr, bytes.length).set(bytes);
    if (e.load(ptr, bytes.length, budget > 0 ? budget : 0, nextId) !== 0) {
      throw new Error(`the shard's weights do not load: ${text(e)}`);
    }
    // BATCH_HOLD_MS, when set: how long calls may wait for each pass in
    // step with them (the module's default otherwise).
    holdMs ??= Number.parseInt(env?.BATCH_HOLD_MS ?? "", 10);
    if (holdMs >= 0) e.set_hold(holdMs);
    if (e.info() !== 0) throw new Error(text(e));
    shard = { e, info: JSON.parse(text(e)) };
    instances += 1;
    loadMs = performance.now() - started;
    return shard;
  }

  // Runs `f` on the module instance, then wakes the requests the module
  // decided for and logs the passes it ended. A trap leaves the instance
  // unusable: the next call makes a new one; the passes of this one end
  // (their caches are gone), and its waiters ask the new one anew.
  function run(f, env) {
    const s = instance(env);
    try {
      const result = f(s.e);
      if (s.e.news() !== 0) {
        const { wake, ended } = JSON.parse(text(s.e));
        for (const id of ended) passes.get(id)?.end("reclaimed");
        for (const id of wake) wakers.get(id)?.();
      }
      return result;
    } catch (err) {
      if (err instanceof WebAssembly.RuntimeError && shard === s) {
        shard = undefined;
        for (const pass of [...passes.values()]) pass.end("trap");
        for (const wake of [...wakers.values()]) wake();
      }
      throw err;
    }
  }

  function layers(info) {
    return `${info.part.first_layer}..${info.part.end_layer}`;
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
  // (the caller's key: kept caches are matched within it), as the module
  // decides: admitted now, after waiting, or refused.
  async function begin(traceparent, tokens, prompt, scope, env) {
    const { info } = instance(env);
    const asked = Number.isInteger(tokens) && tokens > 0 ? tokens : info.config.context;
    const ids = prompt instanceof Uint32Array ? prompt : new Uint32Array(0);
    const scopeBytes = new TextEncoder().encode(typeof scope === "string" ? scope : "");
    const ask = () =>
      run((e) => {
        writeInput(e, ids, scopeBytes);
        const status = e.begin(asked, ids.length, scopeBytes.length, Date.now());
        return status === 0 ? JSON.parse(text(e)) : { error: text(e) };
      }, env);
    let answer = ask();
    for (;;) {
      if (answer.error) throw new Error(answer.error);
      if (answer.refused) return { refused: answer.refused };
      if (answer.unknown) {
        // Asked of an instance a trap ended.
        answer = ask();
        continue;
      }
      if (answer.admitted) {
        const { id, cached, public_tokens } = answer.admitted;
        nextId = Math.max(nextId, id + 1);
        return { pass: new Pass(id, traceparent, cached), cached, public_tokens };
      }
      const { id, ms } = answer.wait;
      nextId = Math.max(nextId, id + 1);
      // Woken by the module (-1), or by the timer: how late it fired
      // tells the module whether the thread was free to run others'.
      const due = Date.now() + ms;
      const late = await new Promise((resolve) => {
        const timer = setTimeout(() => resolve(Math.max(0, Date.now() - due)), ms);
        wakers.set(id, () => {
          clearTimeout(timer);
          resolve(-1);
        });
      });
      wakers.delete(id);
      answer = run((e) => {
        e.poll(id, Date.now(), late);
        return JSON.parse(text(e));
      }, env);
    }
  }

  // Calls of `forward` not yet run, in arrival order, and whether a flush
  // is due. Calls that arrive while others wait run together: one pass of
  // the module over all of them reads each weight once for all (each
  // call's output is what it gets alone: shard/src/shard.rs, step_batch).
  const queue = [];
  // A flush is due as soon as this event is over, or when the module's
  // hold ends (its timer).
  let flushSoon = false;
  let holdTimer = null;

  // A flush once this event's work is done (a microtask: a call alone
  // waits for nothing; calls that must meet are held by the module).
  function schedule() {
    if (flushSoon) return;
    flushSoon = true;
    queueMicrotask(flush);
  }

  // A flush `ms` from now (0: after the events already waiting), unless a
  // call comes first (it flushes at once).
  function holdFor(ms) {
    clearTimeout(holdTimer);
    holdTimer = setTimeout(flush, ms);
  }

  // Hands the module every queued call as one batch. The module decides
  // which run now (shard/src/shard.rs, step_batch); those resolve with
  // their output and their share of the batch's time (by rows), failed
  // ones reject alone, and the rest go back to the front of the queue for
  // the next flush: once other waiting events have run, or when the
  // module holds them (waiting for passes in step with them), at the end
  // of the hold; at the next call's arrival if that comes first. A trap rejects every call of
  // the batch (and `run` ends every pass, which rejects whatever else is
  // queued).
  function flush() {
    flushSoon = false;
    clearTimeout(holdTimer);
    holdTimer = null;
    const calls = queue.splice(0);
    if (calls.length === 0) return;
    const started = performance.now();
    let outcomes;
    let hold = 0;
    try {
      outcomes = run((e) => {
        const head = new Uint32Array(calls.length * 5);
        let words = head.length;
        calls.forEach((c, i) => {
          head.set([c.pass.handle, c.position, c.isTokens ? 1 : 0, c.input.length, c.best], i * 5);
          words += c.input.length;
        });
        const ptr = e.input_buffer(words * 4);
        const view = new Uint8Array(e.memory.buffer, ptr, words * 4);
        view.set(new Uint8Array(head.buffer));
        let offset = head.byteLength;
        for (const { input } of calls) {
          view.set(new Uint8Array(input.buffer, input.byteOffset, input.byteLength), offset);
          offset += input.byteLength;
        }
        if (e.step_batch(calls.length, Date.now()) !== 0) throw new Error(text(e));
        const { outcomes, hold_ms } = JSON.parse(text(e));
        hold = hold_ms ?? 0;
        return outcomes.map((a) => {
          if (a.out) return { out: new Float32Array(e.memory.buffer, a.out.ptr, a.out.len).slice() };
          if (!a.best) return a;
          const { ptr, len } = a.best;
          // Ids as u32: read as floats, some would be NaNs, not kept bit for bit.
          const ids = new Uint32Array(e.memory.buffer, ptr + len * 4, len).slice();
          return { out: new Float32Array(e.memory.buffer, ptr, len).slice(), ids };
        });
      });
    } catch (err) {
      for (const c of calls) c.reject(err);
      return;
    }
    const ms = performance.now() - started;
    const later = [];
    let ranRows = 0;
    calls.forEach((c, i) => {
      if (outcomes[i].out) ranRows += c.rows;
    });
    calls.forEach((c, i) => {
      const outcome = outcomes[i];
      if (outcome.out) {
        const share = ranRows > 0 ? (ms * c.rows) / ranRows : 0;
        const pass = c.pass;
        pass.calls += 1;
        pass.position = c.position + c.rows;
        pass.tokens += c.rows;
        pass.ms += share;
        c.resolve(outcome.ids ? { out: outcome.out, ids: outcome.ids, ms: share } : { out: outcome.out, ms: share });
      } else if (outcome.error) {
        c.reject(new Error(outcome.error.message));
      } else if (c.pass.ended) {
        c.reject(new Error(`this pass has ended (${c.pass.ended})`));
      } else {
        later.push(c);
      }
    });
    if (later.length > 0) {
      queue.unshift(...later);
      // After a hold, or (the batch was full) after the events waiting on
      // the thread have run: a stage is one synchronous call, and touches
      // and other requests' calls should not wait for several in a row.
      holdFor(hold);
    }
  }

  class Pass extends RpcTarget {
    constructor(handle, traceparent, cached) {
      super();
      this.handle = handle;
      this.reused = cached;
      // The next input's position, if the caller does not say.
      this.position = cached;
      this.trace = /^00-([0-9a-f]{32})-/.exec(traceparent ?? "")?.[1] ?? null;
      this.layers = layers(shard.info);
      this.calls = 0;
      this.tokens = 0;
      this.ms = 0;
      // How it ended, once it has.
      this.ended = null;
      passes.set(handle, this);
    }

    // One model pass: token ids or hidden states in, the first at position
    // `at`; hidden states or logits out (the last shard: only the `best`
    // best, with their ids, when asked), with this shard's own time in ms
    // (its share of the batch it ran in). Queued, and run with every other
    // call queued by then (see `flush`).
    forward(input, at, best) {
      if (this.ended) return Promise.reject(new Error(`this pass has ended (${this.ended})`));
      const isTokens = input instanceof Uint32Array;
      if (!isTokens && !(input instanceof Float32Array)) {
        return Promise.reject(
          new TypeError("forward takes a Uint32Array of token ids or a Float32Array of hidden states"),
        );
      }
      const position = Number.isInteger(at) && at >= 0 ? at : this.position;
      const rows = isTokens ? input.length : input.length / shard.info.config.dims;
      // 0 (the whole row) unless a count the module takes (it sends the whole row above 256).
      const top = Number.isInteger(best) && best > 0 && best < 2 ** 32 ? best : 0;
      return new Promise((resolve, reject) => {
        queue.push({ pass: this, input, isTokens, position, rows, best: top, resolve, reject });
        schedule();
      });
    }

    // The caller is still there: its timer fired `late` ms after it was
    // due. Without these (or model passes) the module reclaims the pass a
    // few seconds after the caller went quiet. False once it has ended.
    touch(late) {
      if (this.ended) return false;
      const lateMs = Number.isFinite(late) && late >= 0 ? late : 0;
      return run((e) => e.touch(this.handle, Date.now(), lateMs)) === 1;
    }

    // Ends the pass, `how` ("closed", "disposed", or by the module:
    // "reclaimed", "trap"), and logs it. With `fed` (a Uint32Array: every
    // token id the turn fed, prompt first) its cache is kept for a next
    // turn that starts with them; else freed.
    end(how, fed) {
      if (this.ended) return;
      this.ended = how;
      passes.delete(this.handle);
      for (let i = queue.length - 1; i >= 0; i -= 1) {
        if (queue[i].pass === this) queue.splice(i, 1)[0].reject(new Error(`this pass has ended (${how})`));
      }
      if (shard && (how === "closed" || how === "disposed")) {
        const keep = fed instanceof Uint32Array ? fed : new Uint32Array(0);
        run((e) => {
          writeInput(e, keep);
          e.close(this.handle, keep.length, Date.now());
        });
      }
      // Calls held for this pass need not wait for it any more.
      if (queue.length > 0) schedule();
      console.log(
        JSON.stringify({
          shard: true,
          trace: this.trace,
          layers: this.layers,
          calls: this.calls,
          tokens: this.tokens,
          reused: this.reused,
          ms: Math.round(this.ms * 1000) / 1000,
          ended: how,
        }),
      );
    }

    // The front's end of a turn.
    close(fed) {
      this.end("closed", fed);
    }

    // The stub disposed, or the caller's request over: nothing is kept.
    [Symbol.dispose]() {
      this.end("disposed");
    }
  }

  return class extends WorkerEntrypoint {
    // A turn's pass: `tokens` is the most it will feed (prompt + max_tokens),
    // `prompt` its prompt's token ids, `scope` the caller's key (or "").
    begin(traceparent, tokens, prompt, scope) {
      return begin(traceparent, tokens, prompt, scope, this.env);
    }

    // The pass alone, no cache kept: what a front worker deployed before
    // `begin` calls while the shards it binds are already newer.
    async open(traceparent, tokens) {
      const opened = await begin(traceparent, tokens, undefined, "", this.env);
      if (opened.refused) throw new Error(opened.refused.message);
      return opened.pass;
    }

    // What this shard is, for operators: `GET /` on the shard Worker. It
    // first waits for one timer, whose lateness lets the module's leases
    // run on: what it shows is what the shard holds now.
    async fetch() {
      try {
        const due = Date.now();
        await new Promise((resolve) => setTimeout(resolve, 0));
        run((e) => e.tick(Date.now(), Date.now() - due), this.env);
        const { e, info } = instance(this.env);
        if (e.info() !== 0) throw new Error(text(e));
        return Response.json({
          ...JSON.parse(text(e)),
          layers: layers(info),
          load_ms: loadMs,
          // Module instances this isolate made: more than one after a trap.
          instances,
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
  };
}

// A vocabulary slice's Worker: rows `first..end` of a model's embedding
// and head, and its final norm (pipeline/src/plan.rs cuts a vocabulary too
// large for one isolate into slices; shard/src/slice_abi.rs). It keeps
// nothing per request, but answers as a shard does, so the front opens a
// turn's slices with its layer shards (`begin`: one invocation each) and
// calls the pass it returns:
//   embed(ids)               -> { out: ids.length x dims floats, ms }
//   forward(hidden, at, best) -> { out, ids, ms }: the best `best` logits
//                               of its rows for each row of final hidden
//                               states (best first, model ids), or with
//                               `best` 0 every logit of its rows
// `at` is ignored (a slice has no positions). No math here either.
function sliceEntrypoint(shardModule, weights, { WorkerEntrypoint, RpcTarget }) {
  let slice;
  let loadMs = 0;
  let instances = 0;

  function text(e) {
    return new TextDecoder().decode(new Uint8Array(e.memory.buffer, e.slice_text_ptr(), e.slice_text_len()));
  }

  function instance() {
    if (slice) return slice;
    const started = performance.now();
    const e = new WebAssembly.Instance(shardModule, {}).exports;
    const bytes = new Uint8Array(weights);
    const ptr = e.weights_alloc(bytes.length);
    new Uint8Array(e.memory.buffer, ptr, bytes.length).set(bytes);
    if (e.slice_load(ptr, bytes.length) !== 0) throw new Error(text(e));
    slice = { e, info: JSON.parse(text(e)) };
    instances += 1;
    loadMs = performance.now() - started;
    return slice;
  }

  // Writes `words` (a typed array of 32-bit words) as the input, runs `f`,
  // and copies out what it answered; a trap makes the next call load anew.
  function call(words, f) {
    const s = instance();
    try {
      const ptr = s.e.slice_input(words.byteLength);
      new Uint8Array(s.e.memory.buffer, ptr, words.byteLength).set(
        new Uint8Array(words.buffer, words.byteOffset, words.byteLength),
      );
      if (f(s.e) !== 0) throw new Error(text(s.e));
      const len = s.e.slice_out_len();
      const at = s.e.slice_out_ptr();
      return { e: s.e, len, at };
    } catch (err) {
      if (err instanceof WebAssembly.RuntimeError && slice === s) slice = undefined;
      throw err;
    }
  }

  class SlicePass extends RpcTarget {
    constructor(traceparent) {
      super();
      this.trace = /^00-([0-9a-f]{32})-/.exec(traceparent ?? "")?.[1] ?? null;
      this.calls = 0;
      this.tokens = 0;
      this.ms = 0;
      this.ended = null;
    }

    #timed(f) {
      if (this.ended) throw new Error(`this pass has ended (${this.ended})`);
      const started = performance.now();
      const answer = f();
      const ms = performance.now() - started;
      this.calls += 1;
      this.ms += ms;
      return { ...answer, ms };
    }

    embed(ids) {
      return this.#timed(() => {
        if (!(ids instanceof Uint32Array)) throw new TypeError("embed takes a Uint32Array of token ids");
        const { e, len, at } = call(ids, (e) => e.slice_embed(ids.length));
        this.tokens += ids.length;
        return { out: new Float32Array(e.memory.buffer, at, len).slice() };
      });
    }

    forward(hidden, _at, best) {
      return this.#timed(() => {
        if (!(hidden instanceof Float32Array)) {
          throw new TypeError("forward takes a Float32Array of final hidden states");
        }
        const top = Number.isInteger(best) && best > 0 && best < 2 ** 32 ? best : 0;
        const { e, len, at } = call(hidden, (e) => e.slice_logits(hidden.length, top));
        const out = new Float32Array(e.memory.buffer, at, len).slice();
        if (top === 0) return { out };
        // Ids as u32: read as floats, some would be NaNs, not kept bit for bit.
        return { out, ids: new Uint32Array(e.memory.buffer, at + len * 4, len).slice() };
      });
    }

    touch() {
      return !this.ended;
    }

    end(how) {
      if (this.ended) return;
      this.ended = how;
      const { first, end } = slice?.info ?? {};
      console.log(
        JSON.stringify({
          shard: true,
          trace: this.trace,
          rows: `${first}..${end}`,
          calls: this.calls,
          tokens: this.tokens,
          ms: Math.round(this.ms * 1000) / 1000,
          ended: how,
        }),
      );
    }

    close() {
      this.end("closed");
    }

    [Symbol.dispose]() {
      this.end("disposed");
    }
  }

  return class extends WorkerEntrypoint {
    // A turn's use of the slice: it holds no cache, so every prompt
    // position is "cached" (the layer shards say where the turn starts).
    begin(traceparent, _tokens, prompt) {
      instance();
      return { pass: new SlicePass(traceparent), cached: prompt instanceof Uint32Array ? prompt.length : 0 };
    }

    async fetch() {
      try {
        const { e, info } = instance();
        return Response.json({
          ...info,
          load_ms: loadMs,
          instances,
          linear_memory_bytes: e.memory.buffer.byteLength,
          weights_bytes: weights.byteLength,
        });
      } catch (err) {
        return Response.json(
          { error: { type: "server_error", code: "shard_unavailable", message: String(err), param: null } },
          { status: 503 },
        );
      }
    }
  };
}
