#!/usr/bin/env bash
# Regenerates models/profanity/{vocab.json,weights.bin,unicode.json,golden.json}
# from the PyPI package alt-profanity-check==1.9.1 (scikit-learn 1.9.1 pickles),
# with every Python input pinned in requirements.txt. export.py writes into a
# temporary directory and checks everything (SPEC.md); only then are the files
# copied here. Prints the sha256 lines for models/manifest.toml.
# Byte-reproducible: a rerun rewrites identical files.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
venv="${EDGEINFER_PROFANITY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeinfer/profanity-venv}"
# CPython 3.11 exactly: \w and str.lower() follow its Unicode 14.0.0 tables.
python="${EDGEINFER_PYTHON:-python3.11}"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "export.sh: $venv is not CPython 3.11; remove it and rerun" >&2; exit 1; }
"$venv/bin/pip" install -q --disable-pip-version-check --only-binary=:all: -r requirements.txt
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" export.py "$tmp"
files=(vocab.json weights.bin unicode.json golden.json)
for f in "${files[@]}"; do cp "$tmp/$f" "$f"; done
# The license text, exactly as the installed package's metadata carries it.
"$venv/bin/python" - <<'PY' > LICENSE.profanity-check
import importlib.metadata, sys
d = importlib.metadata.distribution("alt-profanity-check")
sys.stdout.write(d.read_text("licenses/LICENSE"))
PY
sha256sum "${files[@]}" LICENSE.profanity-check
