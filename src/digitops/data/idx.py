"""IDX files (the original MNIST format): parsing and checksum verification.

Checksums cover the uncompressed content, since gzip output differs between tools.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from digitops.errors import DataError

# Package data (src/digitops/data/mnist, in the wheel too), so an installed digitops finds it
# wherever it lives; the checkout's data/mnist is a link to the same folder.
BUNDLED_MNIST = Path(str(resources.files("digitops.data") / "mnist"))
CHECKSUM_FILE = "SHA256SUMS"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_RESTORE_HINT = "restore it (`git checkout src/digitops/data/mnist`) or fetch the original file"
_UBYTE = 0x08


@dataclass(frozen=True)
class IdxSet:
    """Images (N×H×W uint8) and labels (N int64) of one split pair."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def find_idx_file(directory: Path, name: str) -> Path:
    """Return `name` or `name.gz` inside `directory`; fail with one line when neither exists."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{directory / name}[.gz]: file not found — {_RESTORE_HINT}")


def read_bytes(path: Path) -> bytes:
    """The uncompressed content of an IDX file, gzip-compressed or not."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path}: cannot be read ({exc}) — the file is corrupt or truncated; {_RESTORE_HINT}"
        ) from None


def parse_idx(content: bytes, path: Path) -> np.ndarray:
    """Parse IDX bytes (unsigned-byte data) into an array, checking the header against the size."""
    if len(content) < 4 or content[0] != 0 or content[1] != 0 or content[2] != _UBYTE:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = content[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(content) < header:
        raise DataError(f"{path}: IDX header is truncated")
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(content) != expected:
        raise DataError(
            f"{path}: holds {len(content)} bytes, its header promises {expected} — "
            f"the file is truncated or corrupt; {_RESTORE_HINT}"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)


def read_checksums(directory: Path) -> dict[str, str]:
    """Read `SHA256SUMS` (sha256sum format) of a directory; empty when the file is absent."""
    sums_path = directory / CHECKSUM_FILE
    if not sums_path.is_file():
        return {}
    sums = {}
    for line in sums_path.read_text().splitlines():
        digest, _, name = line.strip().partition("  ")
        if digest and name:
            sums[name.lstrip("*")] = digest
    return sums


def load_idx(path: Path, expected_sha256: str | None = None) -> np.ndarray:
    """Read one IDX file, verifying its uncompressed content against a sha256 when given."""
    content = read_bytes(path)
    if expected_sha256 is not None and hashlib.sha256(content).hexdigest() != expected_sha256:
        raise DataError(
            f"{path}: checksum mismatch — the file is corrupt or truncated; {_RESTORE_HINT}"
        )
    return parse_idx(content, path)


def load_idx_dir(directory: Path) -> IdxSet:
    """Load the four MNIST-layout IDX files of a directory, verified by its SHA256SUMS if any."""
    if not directory.is_dir():
        raise DataError(f"{directory}: IDX directory not found")
    sums = read_checksums(directory)
    arrays = {}
    for key, name in IDX_FILES.items():
        path = find_idx_file(directory, name)
        if sums and name not in sums:
            raise DataError(f"{directory / CHECKSUM_FILE}: has no checksum for {name}")
        arrays[key] = load_idx(path, sums.get(name))
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{directory}: {split} images {images.shape} and labels {labels.shape} do not match"
            )
    return IdxSet(
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"].astype(np.int64),
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"].astype(np.int64),
    )
