#!/usr/bin/env bash
# Regenerates models/sentiment-balanced/{sentiment.onnx,golden.json,accuracy.md}: the
# A/B variant of the sentiment head (models/sentiment/train.py --class-weight balanced),
# trained on the same data, split and C grid, in the same venv and pins as
# models/sentiment/export.sh. Byte-for-byte reproducible; about 6 minutes.
# Then prints the sha256 lines to paste into models/manifest.toml.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
venv="${EDGEINFER_MINILM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeinfer/minilm-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q -r ../minilm/requirements.txt
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1
"$venv/bin/python" ../sentiment/train.py . ../minilm --class-weight balanced
sha256sum sentiment.onnx golden.json
