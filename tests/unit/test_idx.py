import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from digitops.data.idx import load_idx_dir, parse_idx
from digitops.data.sources import bundled_mnist_dir
from digitops.errors import DataError


@pytest.fixture
def mnist_copy(tmp_path: Path) -> Path:
    target = tmp_path / "mnist"
    shutil.copytree(bundled_mnist_dir(), target)
    return target


def test_bundled_mnist_loads_with_verified_checksums():
    idx = load_idx_dir(bundled_mnist_dir())
    assert idx.train_images.shape == (60000, 28, 28)
    assert idx.test_images.shape == (10000, 28, 28)
    assert sorted(np.unique(idx.train_labels)) == list(range(10))


def test_checksum_mismatch_names_the_corrupt_file(mnist_copy: Path):
    path = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[100] = (content[100] + 1) % 10  # a plausible label, so only the checksum can tell
    path.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        load_idx_dir(mnist_copy)


def test_truncated_gzip_is_rejected(mnist_copy: Path):
    path = mnist_copy / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_idx_dir(mnist_copy)


def test_missing_file_is_rejected(mnist_copy: Path):
    (mnist_copy / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*not found"):
        load_idx_dir(mnist_copy)


def test_header_size_is_checked_without_checksums():
    header = bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    with pytest.raises(DataError, match="truncated"):
        parse_idx(header + bytes(28 * 28 * 4), Path("x"))
    assert parse_idx(header + bytes(28 * 28 * 5), Path("x")).shape == (5, 28, 28)


def test_non_idx_bytes_are_rejected():
    with pytest.raises(DataError, match="magic"):
        parse_idx(b"PK\x03\x04 not idx", Path("x"))
