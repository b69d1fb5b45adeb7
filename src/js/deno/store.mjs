// Deno KV under the worker's two storage bindings: `CACHE`, with the
// interface of a Workers KV namespace (what workers-rs calls: `get` with
// type arrayBuffer, `put` with expirationTtl), and `SESSION_KV`, the store
// of the session objects (src/glue/session_kv.rs). Locally Deno KV is a
// SQLite file (EDGEINFER_KV); on Deno Deploy, the deployment's own.
//
// Bytes only: what the values mean is the Rust code's. A Deno KV value
// holds at most 64 KiB, so longer ones are stored in parts, all written in
// one atomic operation (at most 800 KiB in all).

const PART_BYTES = 60 * 1024;

function parts(bytes) {
  const out = [];
  for (let at = 0; at < bytes.length || out.length === 0; at += PART_BYTES) {
    out.push(bytes.subarray(at, at + PART_BYTES));
  }
  return out;
}

function joined(chunks) {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

function asBytes(value) {
  if (typeof value === "string") return new TextEncoder().encode(value);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError("a KV value must be a string, an ArrayBuffer or a typed array");
}

// The answer cache, as a Workers KV namespace. Deno KV has no minimum
// lifetime (Workers KV's is 60 s): an entry expires after exactly its TTL.
export class KvNamespace {
  #kv;
  // Read by the Rust code (src/glue/cache.rs): Workers KV's minimum of
  // 60 s does not apply here.
  minExpirationTtl = 0;

  constructor(kv) {
    this.#kv = kv;
  }

  async get(key, options) {
    const type = typeof options === "string" ? options : (options?.type ?? "text");
    const head = await this.#kv.get(["cache", key]);
    if (head.value === null) return null;
    const chunks = [];
    for (let i = 0; i < head.value.parts; i += 10) {
      const keys = [];
      for (let j = i; j < Math.min(head.value.parts, i + 10); j++) keys.push(["cache", key, j]);
      for (const entry of await this.#kv.getMany(keys)) {
        // A part that expired before its head: a miss.
        if (entry.value === null) return null;
        chunks.push(entry.value);
      }
    }
    const bytes = joined(chunks);
    switch (type) {
      case "arrayBuffer":
        return bytes.buffer;
      case "text":
        return new TextDecoder().decode(bytes);
      case "json":
        return JSON.parse(new TextDecoder().decode(bytes));
      default:
        throw new TypeError(`KV get: type ${type} is not served here`);
    }
  }

  async put(key, value, options) {
    const ttl = Number(options?.expirationTtl);
    const expireIn = Number.isFinite(ttl) && ttl > 0 ? ttl * 1000 : undefined;
    const pieces = parts(asBytes(value));
    const op = this.#kv.atomic();
    pieces.forEach((piece, i) => op.set(["cache", key, i], piece, { expireIn }));
    op.set(["cache", key], { parts: pieces.length }, { expireIn });
    const result = await op.commit();
    if (!result.ok) throw new Error("KV put: the write was refused");
  }
}

function conflict(id) {
  const e = new Error(`session ${id} changed since it was read`);
  e.name = "Conflict";
  return e;
}

// The session objects' storage. One entry per session holds its meta
// (bytes) and how many turns it has; each turn's rows are entries of their
// own, in parts, written in the same atomic operation as the count, so a
// turn is stored whole or not at all. Every write is checked against the
// versionstamp the object read: a session another process changed is a
// conflict, and nothing is written.
export class SessionKv {
  #kv;

  constructor(kv) {
    this.#kv = kv;
  }

  async load(id) {
    const head = await this.#kv.get(["sessions", id]);
    if (head.value === null) return null;
    const turns = [];
    let chunks = [];
    let seq = 0;
    for await (const entry of this.#kv.list({ prefix: ["sessions", id, "turns"] })) {
      const [, , , turn] = entry.key;
      if (turn >= head.value.turns) break;
      if (turn !== seq) {
        turns.push(joined(chunks));
        chunks = [];
        seq = turn;
      }
      chunks.push(entry.value);
    }
    if (chunks.length > 0) turns.push(joined(chunks));
    if (turns.length !== head.value.turns) {
      throw new Error(`session ${id}: ${turns.length} of its ${head.value.turns} turns are stored`);
    }
    return { version: head.versionstamp, meta: head.value.meta, turns };
  }

  async commit(id, version, writes) {
    const key = ["sessions", id];
    let at = version;
    for (const [op, bytes] of writes) {
      const write = this.#kv.atomic().check({ key, versionstamp: at });
      if (op === "create") {
        write.set(key, { meta: bytes, turns: 0 });
      } else if (op === "append") {
        const head = await this.#kv.get(key);
        if (head.versionstamp !== at || head.value === null) throw conflict(id);
        const turn = head.value.turns;
        parts(bytes).forEach((piece, i) => write.set(["sessions", id, "turns", turn, i], piece));
        write.set(key, { meta: head.value.meta, turns: turn + 1 });
      } else if (op === "delete") {
        write.delete(key);
      } else {
        throw new TypeError(`unknown session write ${op}`);
      }
      const result = await write.commit();
      if (!result.ok) throw conflict(id);
      at = op === "delete" ? null : result.versionstamp;
      if (op === "delete") await this.#erase(id);
    }
    return at;
  }

  // A deleted session's turns: its head is gone already, so no reader
  // sees them; they are erased in batches.
  async #erase(id) {
    let batch = this.#kv.atomic();
    let n = 0;
    for await (const entry of this.#kv.list({ prefix: ["sessions", id, "turns"] })) {
      batch.delete(entry.key);
      if (++n % 500 === 0) {
        await batch.commit();
        batch = this.#kv.atomic();
      }
    }
    if (n % 500 !== 0) await batch.commit();
  }
}
