// The worker's entry module (wrangler.toml's `main`): the Rust worker as
// scripts/build-worker bundles it into ./index.js (src/js/worker.mjs with
// wasm-bindgen's glue), its fetch handler and its Durable Object classes.
// A separate file so that the modules a Worker is made of keep their names
// (entry.mjs, index.js, index_bg.wasm) whatever the bundle holds.
export { default } from "./index.js";
export * from "./index.js";
