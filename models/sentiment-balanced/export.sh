#!/usr/bin/env bash
# Regenerates models/sentiment-balanced/{sentiment.onnx,golden.json,accuracy.md}: the
# A/B variant of the sentiment head (train.py --class-weight balanced), trained on the
# same data, split and C grid, in the same venv and pins, by models/sentiment/export.sh.
# Byte-for-byte reproducible; about 6 minutes on a free machine.
# Then prints the sha256 lines to paste into models/manifest.toml.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../sentiment/export.sh" "$here" --class-weight balanced
