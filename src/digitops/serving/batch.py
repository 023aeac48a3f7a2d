"""Batch inference: a folder or an S3 prefix of images → one CSV or Parquet file of answers.

The offline face of the service's model, as SageMaker batch transform or Vertex batch prediction
give: the same predictor and the same preprocessing as `/predict`, one row per image file. Faces:
`digitops batch-predict` and the KFP component `batch_predict` (which runs that command, since
the pipeline and serving layers may not import each other).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitops.errors import DataError, DigitopsError, StoreError
from digitops.fileio import atomic_write_bytes
from digitops.serving.predictor import Predictor, load_predictor
from digitops.serving.preprocess import ImageError, preprocess
from digitops.store.backends import Backend, open_backend

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
OUTPUT_SUFFIXES = (".csv", ".parquet")
READERS = 8  # images fetched and decoded at once: S3 round trips overlap, Pillow drops the GIL


@dataclass(frozen=True)
class BatchResult:
    """What a batch run did: image files seen, how many were unreadable, where the rows went."""

    images: int
    failed: int
    out: Path
    model_name: str
    model_version: str
    seconds: float


def score(model: str, source: str, out: Path, batch_size: int = 256) -> BatchResult:
    """Score every image under `source` (a folder or s3://bucket/prefix) with `model` (a model
    directory or a models:/ or runs:/ URI) and write one row per image to `out` (.csv or
    .parquet); an unreadable file gets a row with its error and no digit."""
    started = time.perf_counter()
    out = Path(out)
    _check_output(out)
    if batch_size < 1:
        raise DigitopsError(f"the batch size is at least 1 (got {batch_size})")
    backend, keys = list_images(source)
    predictor = load_predictor(model, threads=os.cpu_count())
    probabilities = [f"p{c}" for c in predictor.class_names]
    rows: list[dict[str, Any]] = []
    read = _reader(backend)
    with ThreadPoolExecutor(READERS) as pool:
        for start in range(0, len(keys), batch_size):
            chunk = keys[start : start + batch_size]
            rows += _rows(predictor, chunk, list(pool.map(read, chunk)))
            if len(keys) > batch_size:
                log.info("%d of %d images scored", len(rows), len(keys))
    _write(out, probabilities, rows)
    return BatchResult(
        images=len(rows),
        failed=sum(1 for row in rows if row["error"]),
        out=out,
        model_name=predictor.name,
        model_version=predictor.version,
        seconds=round(time.perf_counter() - started, 3),
    )


def list_images(source: str) -> tuple[Backend, list[str]]:
    """The backend of `source` and its image files' keys (relative to it), sorted; `DataError`
    when there is no such folder or nothing in it is an image."""
    # The request store's backends list and read local folders and S3 prefixes alike (any
    # S3 endpoint, with the store's timeouts and retries), so no S3 code of our own here.
    if not source.startswith("s3://") and not Path(source).is_dir():
        missing = "is not a folder" if Path(source).exists() else "no such folder"
        raise DataError(f"{source}: {missing}; name a folder or an s3://bucket/prefix of images")
    backend = open_backend(source)
    keys = sorted(k for k in backend.keys("") if k.lower().endswith(IMAGE_SUFFIXES))
    if not keys:
        raise DataError(
            f"{source}: no images in it ({' '.join(IMAGE_SUFFIXES)}, in any folder below)"
        )
    return backend, keys


def _reader(backend: Backend) -> Callable[[str], np.ndarray | str]:
    """A function: key → the model's input, or why the file cannot be one."""

    def read(key: str) -> np.ndarray | str:
        try:
            data = backend.get(key)
            if data is None:
                return "the file is gone (deleted after the listing)"
            return preprocess(data)
        except ImageError as exc:
            return str(exc)
        except (OSError, StoreError) as exc:  # one unreadable file does not stop the batch
            return f"cannot read the file ({exc})"

    return read


def _rows(
    predictor: Predictor, keys: list[str], inputs: list[np.ndarray | str]
) -> list[dict[str, Any]]:
    """One row per key: the model's answer, or the error that kept the image from it."""
    good = [i for i, x in enumerate(inputs) if isinstance(x, np.ndarray)]
    answers = predictor.predict(np.stack([inputs[i] for i in good])) if good else []
    by_index = dict(zip(good, answers, strict=True))
    model = {"model_name": predictor.name, "model_version": predictor.version}
    rows = []
    for i, (key, x) in enumerate(zip(keys, inputs, strict=True)):
        scores: dict[str, Any] = {}
        if (answer := by_index.get(i)) is not None:
            scores = {"digit": answer.digit, "confidence": answer.confidence}
            scores |= {f"p{c}": p for c, p in answer.probabilities.items()}
        rows.append({"path": key, **scores, **model, "error": x if isinstance(x, str) else ""})
    return rows


def _check_output(out: Path) -> None:
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise DigitopsError(
            f"{out}: the output is a .csv or .parquet file (its suffix picks the format)"
        )
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise DigitopsError(f"{out}: writing Parquet needs pyarrow (pip install pyarrow); or .csv")


def _write(out: Path, probabilities: list[str], rows: list[dict[str, Any]]) -> None:
    """The rows as CSV or Parquet (by `out`'s suffix), written whole or not at all (an image
    with an error has no digit, confidence or probabilities: empty in CSV, null in Parquet)."""
    columns = ["path", "digit", "confidence", *probabilities, "model_name", "model_version"]
    columns.append("error")
    if out.suffix.lower() == ".csv":
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(out, text.getvalue().encode())
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    floats = {"confidence", *probabilities}
    schema = pa.schema([(c, pa.float64() if c in floats else pa.string()) for c in columns])
    table = pa.table({c: [row.get(c) for row in rows] for c in columns}, schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    atomic_write_bytes(out, buffer.getvalue())
