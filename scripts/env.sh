# Sourced by the other scripts: where the pinned tools live and the environment
# that lets the build and wrangler run offline (no downloads from GitHub,
# no telemetry, wrangler state kept inside the project).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export EDGEINFER_TOOLS="${EDGEINFER_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeinfer/tools}"
export PATH="$EDGEINFER_TOOLS/bin:$HOME/.cargo/bin:$root/node_modules/.bin:$PATH"
# Versions: wasm-bindgen-cli must equal Cargo.lock's wasm-bindgen exactly.
export WASM_BINDGEN_VERSION="0.2.130"
export WASM_BINDGEN_BIN="$EDGEINFER_TOOLS/bin/wasm-bindgen"
# scripts/setup installs it in the background: its process and log.
export WASM_BINDGEN_PID="$EDGEINFER_TOOLS/wasm-bindgen-cli.install.pid"
export WASM_BINDGEN_LOG="$EDGEINFER_TOOLS/wasm-bindgen-cli.install.log"

# True while scripts/setup's background install of wasm-bindgen-cli runs.
wasm_bindgen_installing() {
  [ -f "$WASM_BINDGEN_PID" ] && kill -0 "$(cat "$WASM_BINDGEN_PID")" 2>/dev/null
}

# Waits for that install, then fails (naming its log) unless the pinned
# version is there.
wait_for_wasm_bindgen() {
  if wasm_bindgen_installing; then
    echo "waiting for wasm-bindgen-cli's install to finish (log: $WASM_BINDGEN_LOG)" >&2
    while wasm_bindgen_installing; do sleep 1; done
  fi
  if [ "$("$WASM_BINDGEN_BIN" --version 2>/dev/null | awk '{print $NF}')" != "$WASM_BINDGEN_VERSION" ]; then
    echo "wasm-bindgen-cli $WASM_BINDGEN_VERSION is not installed: run scripts/setup (its last install's log: $WASM_BINDGEN_LOG)" >&2
    return 1
  fi
}
export ESBUILD_BIN="$root/node_modules/.bin/esbuild"
export WRANGLER_SEND_METRICS=false
export CLOUDFLARE_CF_FETCH_ENABLED=false
export XDG_CONFIG_HOME="$root/.config"
