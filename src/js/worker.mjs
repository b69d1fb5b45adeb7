// The Rust worker as a module a Workers runtime (workerd, or Deno through
// src/js/deno/) can serve: its fetch handler as the default entrypoint, its
// Durable Object classes by name. scripts/build-worker bundles this file
// with wasm-bindgen's glue (`./index.js` in the staging directory) and the
// list of classes it generates (`./objects.mjs`) into build/index.js.
//
// Why a file of our own: a panic aborts the wasm instance, and three
// things must then hold that the glue alone does not give.
// - The request whose handler trapped is answered with the API's JSON
//   error (a 500 with `{"error": {...}}`), not workerd's bare 500 after it
//   declares the request hung. The trap happens inside wasm-bindgen's task
//   queue, not inside the call that started the request, so its promise
//   never settles: it is only seen as an uncaught error event, and every
//   request in flight on the aborted instance is answered 500 then.
// - The next request runs on a fresh instance (the worker crate's panic
//   hook sets `criticalError`; the glue's reset makes the new instance).
// - A Durable Object made on the old instance is made again on the new
//   one (its Rust object died with the old memory) before its next call.
import { WorkerEntrypoint } from "cloudflare:workers";
import * as rust from "./index.js";

// The worker crate's shared flag object: `criticalError` after a panic,
// `instanceId` counted up by each instance's start.
const state = rust.__worker_init_state();

/** Makes a fresh instance when the last one panicked. */
function recover() {
  if (state.criticalError) {
    rust.__wbg_reset_state();
    state.criticalError = false;
  }
}

const INTERNAL_ERROR = JSON.stringify({
  error: {
    type: "server_error",
    code: "internal_error",
    message: "the server failed to process the request; it has been logged",
    param: null,
  },
});

// The rejecters of the requests in flight.
const inFlight = new Set();

addEventListener("error", (event) => {
  if (event.error instanceof WebAssembly.RuntimeError) {
    state.criticalError = true;
    for (const fail of inFlight) fail(event.error);
  }
});

/** `run()`'s response, or the JSON 500 when it fails or its instance traps. */
async function answered(request, run) {
  let fail;
  const aborted = new Promise((_, reject) => {
    fail = reject;
  });
  inFlight.add(fail);
  try {
    recover();
    return await Promise.race([run(), aborted]);
  } catch (e) {
    if (e instanceof WebAssembly.RuntimeError) state.criticalError = true;
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

/** The worker's fetch handler. */
export default class extends WorkerEntrypoint {
  fetch(request) {
    return answered(request, () => rust.fetch(request, this.env, this.ctx));
  }
}

/**
 * A Durable Object class of the Rust worker: each of its methods (fetch,
 * alarm, the WebSocket handlers) forwarded to the Rust object, made again
 * when the instance it lived on was replaced.
 */
export function durableObject(Rust) {
  const current = Symbol("current");
  class Recovering {
    #args;
    #inner;
    #instance;

    constructor(...args) {
      this.#args = args;
      this[current]();
    }

    [current]() {
      recover();
      if (this.#inner === undefined || this.#instance !== state.instanceId) {
        this.#inner = new Rust(...this.#args);
        this.#instance = state.instanceId;
      }
      return this.#inner;
    }
  }
  for (const name of Object.getOwnPropertyNames(Rust.prototype)) {
    if (name === "constructor" || name === "free" || name.startsWith("__")) continue;
    if (typeof Object.getOwnPropertyDescriptor(Rust.prototype, name).value !== "function") continue;
    Object.defineProperty(Recovering.prototype, name, {
      value: function (...args) {
        const inner = this[current]();
        try {
          return inner[name](...args);
        } catch (e) {
          if (e instanceof WebAssembly.RuntimeError) state.criticalError = true;
          throw e;
        }
      },
      writable: true,
      configurable: true,
    });
  }
  Object.defineProperty(Recovering, "name", { value: Rust.name });
  return Recovering;
}
