// Durable Objects under the Deno server: the worker's own object classes
// (ChatSession, RateLimiter: Rust, in the one wasm module) behind the
// namespace interface the Rust code calls (`idFromName`, `get`, a stub's
// `fetch`). Each name has one live object in this process, which is what
// serializes a session's turns (the object's turn lock) and holds a
// caller's rate-limit bucket, as on workerd. An object idle for
// IDLE_MS is dropped, as workerd evicts one; it is built again on its next
// call (a session reads its storage again, a bucket starts full).
//
// The class is named as workerd's, because workers-rs checks a binding's
// constructor name.

const IDLE_MS = 60_000;
// Objects kept before idle ones are dropped.
const KEPT = 1024;

class DurableObjectId {
  constructor(name) {
    this.name = name;
  }
  toString() {
    return this.name;
  }
  equals(other) {
    return other?.name === this.name;
  }
}

export class DurableObjectNamespace {
  #make;
  #live = new Map();

  // `make(state)`: a new object of the class, given its state.
  constructor(make) {
    this.#make = make;
  }

  idFromName(name) {
    return new DurableObjectId(String(name));
  }

  get(id) {
    const namespace = this;
    return {
      id,
      fetch(input, init) {
        const request = input instanceof Request ? input : new Request(input, init);
        return namespace.#call(id.name, request);
      },
    };
  }

  async #call(name, request) {
    let entry = this.#live.get(name);
    if (!entry) {
      this.#sweep();
      const state = {
        id: new DurableObjectId(name),
        // No SQLite under these objects: a session keeps its rows in the
        // SESSION_KV binding (Deno KV) instead.
        storage: {},
        waitUntil() {},
        blockConcurrencyWhile: (f) => f(),
      };
      entry = { object: this.#make(state), calls: 0, used: Date.now() };
      this.#live.set(name, entry);
    }
    entry.calls += 1;
    entry.used = Date.now();
    try {
      return await entry.object.fetch(request);
    } finally {
      entry.calls -= 1;
      entry.used = Date.now();
    }
  }

  // Drops objects idle for IDLE_MS, once more than KEPT are live; one in
  // a call is never dropped (a turn in progress holds its session's lock).
  #sweep() {
    if (this.#live.size < KEPT) return;
    const now = Date.now();
    for (const [name, entry] of this.#live) {
      if (entry.calls === 0 && now - entry.used > IDLE_MS) this.#live.delete(name);
    }
  }
}
