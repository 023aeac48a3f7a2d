"""Reading the request store: records, the labels in force, live accuracy, labeled images.

A line that is not a whole record (a local write cut short by a full disk before it could be
truncated away) is skipped and counted, never a reason to refuse the store.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from digitops.errors import StoreError
from digitops.store.backends import Backend, open_backend
from digitops.store.layout import MARKER, image_from_bytes, parse_location

log = logging.getLogger(__name__)

Z_95 = 1.959964  # the normal quantile of a two-sided 95 % interval


def open_store(uri: str) -> Backend:
    """An existing store (never made here: a reader that makes one hides a wrong path)."""
    backend = open_backend(uri)
    if backend.get(MARKER) is None:
        raise StoreError(f"{uri}: not a request store (no {MARKER}); serve with --store first")
    return backend


def read_lines(
    backend: Backend, prefix: str, seen: dict[str, list[dict[str, Any]]] | None = None
) -> list[dict[str, Any]]:
    """Every JSON record under `prefix` (`records/` or `labels/`), in key order. With `seen`
    (kept by the caller between calls), an S3 store's objects, which never change, are read
    once: a service that re-reads its labels every few seconds lists the prefix, no more."""
    if seen is None or backend.appends:
        return _parse(backend, backend.keys(prefix))
    keys = backend.keys(prefix)
    for key in keys:
        if key not in seen:
            seen[key] = _parse(backend, [key])
    return [item for key in keys for item in seen[key]]


def _parse(backend: Backend, keys: list[str]) -> list[dict[str, Any]]:
    found, bad = [], 0
    for key in keys:
        if not key.endswith((".jsonl", ".json")):
            continue
        for line in (backend.get(key) or b"").splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(item, dict) and "request_id" in item:
                found.append(item)
            else:
                bad += 1
    if bad:
        log.warning("%s: skipped %d line(s) that are not whole records", backend.uri, bad)
    return found


def read_blob(backend: Backend, at: str) -> bytes:
    """The bytes an `image_at` / `original_at` location names."""
    key, offset, length = parse_location(at)
    return backend.get_range(key, offset, length)


def with_descriptors(backend: Backend, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`records` with the descriptors of their images (`digitops.data.descriptors`), computed
    once per image for all of them at once."""
    from digitops.data.descriptors import describe

    where = {record["image"]: record["image_at"] for record in records}
    digests = sorted(where)
    images = [image_from_bytes(read_blob(backend, where[digest])) for digest in digests]
    if not images:
        return records
    values = describe(np.stack(images))
    row = {digest: i for i, digest in enumerate(digests)}
    return [
        record | {name: float(column[row[record["image"]]]) for name, column in values.items()}
        for record in records
    ]


def labels_in_force(labels: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The latest label of each labeled request (a replaced label stays in the store)."""
    latest: dict[str, dict[str, Any]] = {}
    for entry in sorted(labels, key=lambda e: e["time"]):
        latest[entry["request_id"]] = entry
    return latest


@dataclass(frozen=True)
class LiveAccuracy:
    """Accuracy of one model version on the production requests users labeled."""

    model_version: str
    correct: int
    labeled: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.labeled if self.labeled else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        """The Wilson 95 % interval: how little a handful of labels says."""
        n = self.labeled
        if n == 0:
            return 0.0, 1.0
        p, z2 = self.correct / n, Z_95**2
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = Z_95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        return max(0.0, centre - half), min(1.0, centre + half)


def live_accuracy(labels: list[dict[str, Any]]) -> list[LiveAccuracy]:
    """Per model version, on the labels in force (each names the version that predicted)."""
    counts: dict[str, list[int]] = {}
    for entry in labels_in_force(labels).values():
        tally = counts.setdefault(str(entry["model_version"]), [0, 0])
        tally[0] += entry["label"] == entry["predicted"]
        tally[1] += 1
    return [LiveAccuracy(version, c, n) for version, (c, n) in sorted(counts.items())]


@dataclass(frozen=True)
class LabeledImages:
    """The store's labeled images, one per image (the latest label wins), in request order."""

    images: np.ndarray  # N×28×28 uint8, exactly as the model saw them
    labels: list[str]
    request_ids: list[str]
    hashes: list[str]


def labeled_images(uri: str) -> LabeledImages:
    """Every labeled image of the store at `uri`."""
    backend = open_store(uri)
    by_image: dict[str, dict[str, Any]] = {}
    in_force = labels_in_force(read_lines(backend, "labels/")).values()
    for entry in sorted(in_force, key=lambda e: e["time"]):
        by_image[entry["image"]] = entry  # one image labeled twice: the latest label
    entries = sorted(by_image.values(), key=_order)
    images = []
    for entry in entries:
        try:
            images.append(image_from_bytes(read_blob(backend, entry["image_at"])))
        except (OSError, ValueError) as exc:
            raise StoreError(
                f"{uri}: the image of {entry['request_id']} is unreadable ({exc})"
            ) from None
    return LabeledImages(
        images=np.stack(images) if images else np.zeros((0, 28, 28), np.uint8),
        labels=[e["label"] for e in entries],
        request_ids=[e["request_id"] for e in entries],
        hashes=[e["image"] for e in entries],
    )


def _order(entry: dict[str, Any]) -> tuple[float, str]:
    return entry.get("request_time", 0.0), entry["request_id"]
