#!/usr/bin/env bash
# Regenerates models/lande/{lande.onnx,ngrams.json,golden.json} from the npm package
# lande@1.0.10, with every input pinned (package-lock.json, requirements.txt).
# Then prints the sha256 lines to paste into models/manifest.toml.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
source ../venv.sh
pinned_venv EDGEINFER_EXPORT_VENV export-venv requirements.txt
npm ci --silent --no-audit --no-fund
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
node export.mjs "$tmp/weights.json" ngrams.json golden.json
"$venv/bin/python" to_onnx.py "$tmp/weights.json" golden.json lande.onnx
sha256sum lande.onnx ngrams.json golden.json
