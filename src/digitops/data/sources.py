"""Input sources for `prepare`: bundled MNIST, IDX directories, image folders and CSV files.

Each source becomes `RawData`: 28×28 uint8 images, labels as indices into `class_names`.
The classes come from the data (sorted label values), never from a constant.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitops.data.idx import BUNDLED_MNIST, IDX_FILES, load_idx_dir
from digitops.errors import DataError, StoreError
from digitops.store.layout import MARKER

IMAGE_SIZE = 28
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}  # Pillow's modes of 16-bit gray


@dataclass(frozen=True)
class Labelled:
    """Images (N×28×28 uint8) with their raw label names (N strings)."""

    images: np.ndarray
    names: np.ndarray


@dataclass(frozen=True)
class RawData:
    """A training pool and an optional test split, labels already mapped to class indices."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray | None
    test_labels: np.ndarray | None
    class_names: list[str]
    description: str
    # With a request-store source: image hash -> request id of each production image.
    provenance: dict[str, str] | None = None


def bundled_mnist_dir() -> Path:
    """The embedded MNIST copy: $DIGITOPS_MNIST_DIR, else the bundled copy (package data)."""
    return Path(os.environ.get("DIGITOPS_MNIST_DIR", BUNDLED_MNIST))


def load_source(
    source: str, test_source: str | None, label_column: str, classes: list[str] | None
) -> RawData:
    """Read `source` (and `test_source`) and map labels to contiguous class indices."""
    provenance = None
    if is_store(source):
        (train, provenance), test = read_store(source), None
    else:
        train, test = _read_any(source, label_column)
    if test_source is not None:
        if test is not None:
            raise DataError(f"{source}: already has a test split; drop test_source")
        test, extra = _read_any(test_source, label_column)
        if extra is not None:
            raise DataError(f"{test_source}: test_source must be a single split, not an IDX pair")
    class_names = _class_names(train.names, classes, source)
    index = {name: i for i, name in enumerate(class_names)}
    test_images = test_labels = None
    if test is not None:
        unknown = sorted(set(test.names.tolist()) - set(index))
        if unknown:
            raise DataError(
                f"{test_source or source}: test label(s) {unknown[:5]} are not among "
                f"the training data's classes {class_names}"
            )
        test_images, test_labels = test.images, _to_indices(test.names, index)
    description = source if test_source is None else f"{source} + {test_source}"
    return RawData(
        train.images,
        _to_indices(train.names, index),
        test_images,
        test_labels,
        class_names,
        description,
        provenance,
    )


def is_store(source: str) -> bool:
    """Whether `source` names a request store (its labeled images are the data)."""
    return source.startswith("s3://") or (Path(source) / MARKER).is_file()


def read_store(source: str) -> tuple[Labelled, dict[str, str]]:
    """The labeled images of a request store and, per image hash, the request it came from."""
    from digitops.store.reader import labeled_images

    try:
        found = labeled_images(source)
    except StoreError as exc:
        raise DataError(str(exc)) from None
    if not found.labels:
        raise DataError(f"{source}: the request store holds no labeled image yet (POST /feedback)")
    return Labelled(found.images, np.array(found.labels)), dict(
        zip(found.hashes, found.request_ids, strict=True)
    )


def _read_any(source: str, label_column: str) -> tuple[Labelled, Labelled | None]:
    if source == "mnist":
        return _read_idx(bundled_mnist_dir())
    if is_store(source):
        return read_store(source)[0], None  # as a test_source
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"{source}: data source not found (expected 'mnist', an IDX directory, "
            f"an image folder, a CSV file or a request store)"
        )
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"{source}: a file source must be a CSV (label + 784 pixel columns)")
        return _read_csv(path, label_column), None
    if any((path / f"{name}{gz}").is_file() for name in IDX_FILES.values() for gz in ("", ".gz")):
        return _read_idx(path)
    return _read_image_folder(path), None


def _read_idx(directory: Path) -> tuple[Labelled, Labelled]:
    idx = load_idx_dir(directory)
    for images in (idx.train_images, idx.test_images):
        if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise DataError(f"{directory}: images are {images.shape[1:]}, expected 28×28")
    return (
        Labelled(idx.train_images, idx.train_labels.astype(str)),
        Labelled(idx.test_images, idx.test_labels.astype(str)),
    )


def _read_csv(path: Path, label_column: str) -> Labelled:
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc.__class__.__name__})") from None
    if label_column not in frame.columns:
        raise DataError(
            f"{path}: no label column '{label_column}' "
            f"(set prepare.label_column); columns start {list(frame.columns[:3])}"
        )
    pixels = frame.drop(columns=[label_column])
    if pixels.shape[1] != IMAGE_SIZE * IMAGE_SIZE:
        raise DataError(f"{path}: {pixels.shape[1]} pixel columns, expected 784 (28×28)")
    if len(frame) == 0:
        raise DataError(f"{path}: the CSV has no rows")
    values = pixels.to_numpy()
    if not np.issubdtype(values.dtype, np.number) or values.min() < 0 or values.max() > 255:
        raise DataError(f"{path}: pixel values must be numbers in 0..255")
    images = values.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    return Labelled(images, frame[label_column].astype(str).to_numpy())


def _read_image_folder(root: Path) -> Labelled:
    images, names = [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p, root)):
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES and not is_hidden(file, root):
                images.append(read_image(file))
                names.append(class_dir.name)
    if not images:
        raise DataError(f"{root}: no images found (expected {root}/<label>/*.png)")
    return Labelled(np.stack(images), np.array(names))


def sixteen_bit_levels(image: Any) -> np.ndarray | None:
    """A 16-bit grayscale PIL image's levels as floats in [0, 1] (Pillow's convert("L") would
    clip every level above 255 to white); None for any other mode."""
    if image.mode not in SIXTEEN_BIT_MODES:
        return None
    return np.clip(np.asarray(image, dtype=np.float32) / 65535.0, 0.0, 1.0)


def is_hidden(path: Path, root: Path) -> bool:
    """Whether `path` is, or lies in, a dot file or folder below `root` (.ipynb_checkpoints,
    .DS_Store...): tool state, never data. Dots above `root` do not count."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def read_image(file: Path) -> np.ndarray:
    """One image file as a 28×28 uint8 grayscale array (resized, otherwise as it is). A file that
    does not decode whole (truncated, corrupt) is an error, never partial data; 16-bit levels
    are scaled to 8 bits, not clipped."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as opened:
            opened.load()  # raises on data that ends early, where convert() would fill it in
            img: Image.Image = opened
            if (levels := sixteen_bit_levels(img)) is not None:
                img = Image.fromarray((levels * 255).round().astype(np.uint8))
            gray = img.convert("L")
            if gray.size != (IMAGE_SIZE, IMAGE_SIZE):
                gray = gray.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(gray, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{file}: not a readable image ({exc.__class__.__name__}: {exc})") from None


def _class_names(names: np.ndarray, expected: list[str] | None, source: str) -> list[str]:
    found = sorted(set(names.tolist()), key=label_order)
    if expected is None:
        return found
    unknown = sorted(set(found) - set(expected))
    if unknown:
        raise DataError(
            f"{source}: label(s) {unknown[:5]} are outside the configured classes "
            f"{expected} (prepare.classes)"
        )
    return list(expected)


def label_order(name: str) -> tuple[int, int, str]:
    """Numeric labels in numeric order ('2' before '10'), then the rest alphabetically."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _to_indices(names: np.ndarray, index: dict[str, int]) -> np.ndarray:
    return np.array([index[name] for name in names.tolist()], dtype=np.int64)
