// The worker's entry module: the Rust worker (build/index.js, made by
// worker-build), wrapped so that a request whose handler fails in a way Rust
// could not answer -- a panic, which aborts the wasm instance -- still gets
// the API's JSON error contract (a 500 with `{"error": {...}}`) instead of
// workerd's bare 500 after it declares the request hung. worker-build's shim
// marks the instance as failed and instantiates it afresh for the next
// request, so the isolate keeps serving.
//
// A panic traps inside wasm-bindgen's task queue, not inside the call that
// started the request, so the request's promise never settles: the trap is
// only seen as an uncaught error event. Every request in flight on the
// aborted instance is lost with it, so each is answered 500 then.
// scripts/build-worker copies this file into the build directory.
import { WorkerEntrypoint } from "cloudflare:workers";
import RustWorker from "./index.js";

export * from "./index.js";

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
    for (const fail of inFlight) fail(event.error);
  }
});

export default class extends WorkerEntrypoint {
  async fetch(request) {
    let fail;
    const aborted = new Promise((_, reject) => {
      fail = reject;
    });
    inFlight.add(fail);
    try {
      return await Promise.race([
        new RustWorker(this.ctx, this.env).fetch(request),
        aborted,
      ]);
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
}
