# Sourced by the other scripts: where the pinned tools live and the environment
# that lets the build and wrangler run offline (no downloads from GitHub,
# no telemetry, wrangler state kept inside the project).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export EDGEINFER_TOOLS="${EDGEINFER_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeinfer/tools}"
export PATH="$EDGEINFER_TOOLS/bin:$HOME/.cargo/bin:$root/node_modules/.bin:$PATH"
# Versions: wasm-bindgen-cli must equal Cargo.lock's wasm-bindgen exactly.
export WASM_BINDGEN_VERSION="0.2.130"
export WASM_BINDGEN_BIN="$EDGEINFER_TOOLS/bin/wasm-bindgen"
export ESBUILD_BIN="$root/node_modules/.bin/esbuild"
export WRANGLER_SEND_METRICS=false
export CLOUDFLARE_CF_FETCH_ENABLED=false
export XDG_CONFIG_HOME="$root/.config"
