"""The data that drift detection compares with the training data ("current" data).

Three kinds: a dataset directory (its test split), a folder of image files (any depth, read
as they are: resized to 28×28 grayscale, never inverted or centred, so such changes show), and
the service's request store (descriptors computed from its kept images), or a folder of
request-log JSON lines that hold descriptors, or one such file. A line that is not a whole
record (a write cut short by a crash or a full disk) is skipped and counted, not a reason to
refuse the log.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from digitops.data.dataset import MANIFEST, load_dataset
from digitops.data.descriptors import COLUMNS
from digitops.data.sources import IMAGE_SUFFIXES, is_hidden, read_image
from digitops.errors import DataError
from digitops.store.layout import MARKER

log = logging.getLogger(__name__)

REQUEST_LOG_SUFFIXES = {".jsonl", ".ndjson"}


@dataclass(frozen=True)
class Current:
    """Images to describe, or a table already described (the request log), and where from."""

    source: str
    kind: str
    images: np.ndarray | None = None
    table: pd.DataFrame | None = None

    def __len__(self) -> int:
        if self.images is not None:
            return len(self.images)
        return 0 if self.table is None else len(self.table)


def load_current(source: str | Path) -> Current:
    """Read `source`; every way it can be empty, unreadable or not images is a `DataError`."""
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: current data not found")
    if path.is_dir() and (path / MARKER).is_file():
        return _checked(Current(str(path), "request store", table=_read_store(path)))
    if path.is_dir() and (path / MANIFEST).is_file():
        images = load_dataset(path).split("test").images
        return _checked(Current(str(path), "dataset test split", images=images))
    if path.is_dir() and (logs := _request_logs(path)):
        table = pd.concat([_read_log(file) for file in logs], ignore_index=True)
        return _checked(Current(str(path), "request log", table=table))
    if path.is_dir():
        return _checked(Current(str(path), "image folder", images=_read_folder(path)))
    if path.suffix.lower() in REQUEST_LOG_SUFFIXES:
        return _checked(Current(str(path), "request log", table=_read_log(path)))
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return Current(str(path), "image file", images=read_image(path)[None])
    raise DataError(
        f"{path}: not current data: expected a dataset directory, a folder of images or a "
        f"request log ({', '.join(sorted(REQUEST_LOG_SUFFIXES))})"
    )


def _read_folder(root: Path) -> np.ndarray:
    try:
        files = sorted(
            p
            for p in root.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and not is_hidden(p, root)
        )
    except OSError as exc:
        raise DataError(f"{root}: cannot be read ({exc.strerror})") from None
    if not files:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return np.stack([read_image(file) for file in files])


def _request_logs(root: Path) -> list[Path]:
    """The request logs directly in `root` (the log and its rotated files), if it holds any."""
    return sorted(
        p
        for p in root.iterdir()
        if p.is_file() and p.suffix.lower() in REQUEST_LOG_SUFFIXES and not is_hidden(p, root)
    )


def _read_store(root: Path) -> pd.DataFrame:
    """The store's records with their images' descriptors."""
    from digitops.errors import StoreError
    from digitops.store.reader import open_store, read_lines, with_descriptors

    try:
        backend = open_store(str(root))
        return pd.DataFrame.from_records(with_descriptors(backend, read_lines(backend, "records/")))
    except StoreError as exc:
        raise DataError(str(exc)) from None


def _read_log(path: Path) -> pd.DataFrame:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from None
    records, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    if lines and not records:
        raise DataError(f"{path}: not a request log: no line is a JSON record")
    if bad:
        log.warning("%s: skipped %d line(s) that are not whole records", path, bad)
    table = pd.DataFrame.from_records(records)
    missing = [column for column in COLUMNS if column not in table]
    if not table.empty and missing:
        raise DataError(f"{path}: request log entries lack {', '.join(missing)}")
    return table


def _checked(current: Current) -> Current:
    if len(current) == 0:
        raise DataError(f"{current.source}: the {current.kind} is empty; nothing to compare")
    return current
