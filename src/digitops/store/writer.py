"""Writing the request store: a record per prediction, a label per correction.

Images go in before the record that names them, and a record is one append (or one object), so
a reader never finds a record whose image is missing or half a record. A record that is
acknowledged (its request id returned) is on disk or in S3: the service answers after `record`.
Callers on the prediction path catch `StoreError` and `OSError`: a store that fails never fails
a prediction (`digitops.serving.app` counts it and answers anyway).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from digitops.data.descriptors import describe
from digitops.errors import StoreError
from digitops.store.backends import Backend, open_backend
from digitops.store.layout import (
    MAX_ORIGINAL,
    encode_png,
    image_hash,
    image_key,
    labels_key,
    labels_prefix,
    new_segment,
    original_key,
    records_key,
    request_id,
    split_request_id,
)

SEGMENT_BYTES = 16 * 2**20  # a local records file rolls over at this size (and every day)
CAP_BYTES = 20 * 2**30  # a local store takes no new requests past this size (nothing is deleted)
RESCAN_S = 300.0  # how often a writer re-measures the store's size (other writers add to it)
_KNOWN_IMAGES = 100_000  # image keys a writer remembers having written


class UnknownRequest(StoreError):
    """No prediction in the store has this request id."""


class BadLabel(StoreError):
    """The label is not one of the model's classes."""


class LabelConflict(StoreError):
    """The request is labeled already (and the caller did not ask to replace the label)."""

    def __init__(self, message: str, existing: dict[str, Any]) -> None:
        super().__init__(message)
        self.existing = existing


class StoreFull(StoreError):
    """The store reached its size cap."""


@dataclass(frozen=True)
class Correction:
    """One label for one request, as a client gives it."""

    request_id: str
    label: str
    source: str
    replace: bool = False


class StoreWriter:
    """Writes records and labels to the store at `uri` (made on first use if it is local)."""

    def __init__(
        self,
        uri: str,
        source: str,
        cap_bytes: int = CAP_BYTES,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        self.backend: Backend = open_backend(uri)
        self.backend.ensure()
        self.source = source
        self.cap_bytes = cap_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._segment: tuple[str, int] | None = None  # (name, pid that opened it)
        self._next = 0
        self._segment_bytes = 0
        self._known: set[str] = set()
        self._used: int | None = None
        self._measured_at = 0.0

    @property
    def uri(self) -> str:
        return self.backend.uri

    def record(
        self,
        images: np.ndarray,
        uploads: Sequence[bytes],
        predictions: Sequence[Any],
        embeddings: np.ndarray | None,
        model_name: str,
        model_version: str,
    ) -> list[str]:
        """Keep one prediction per image (`images`: N×28×28 uint8, as the model saw them;
        `predictions`: `digitops.serving.predictor.Prediction`s); returns their request ids."""
        self._check_cap()
        now = time.time()
        lines, written = [], 0
        segment, first = self._reserve(len(images), now)
        descriptors = describe(images)
        for i, (image, upload, prediction) in enumerate(
            zip(images, uploads, predictions, strict=True)
        ):
            digest = image_hash(image)
            written += self._put_once(image_key(digest), lambda image=image: encode_png(image))
            original = original_key(upload) if len(upload) <= MAX_ORIGINAL else None
            if original is not None:
                written += self._put_once(original, lambda upload=upload: upload)
            record: dict[str, Any] = {
                "request_id": request_id(segment, first + i),
                "time": now,
                "source": self.source,
                "model_name": model_name,
                "model_version": model_version,
                "predicted": prediction.digit,
                "confidence": prediction.confidence,
                "top3": prediction.top3,
                "image": digest,
                "original": original,
                "upload_bytes": len(upload),
            }
            record |= {name: float(values[i]) for name, values in descriptors.items()}
            if embeddings is not None:
                record["embedding"] = np.round(embeddings[i], 5).tolist()
            lines.append(json.dumps(record))
        data = ("\n".join(lines) + "\n").encode()
        if self.backend.appends:
            self.backend.append(records_key(segment), data)
        else:
            self.backend.put(records_key(segment), data)
        self._count(written + len(data))
        return [request_id(segment, first + i) for i in range(len(images))]

    def find(self, rid: str) -> dict[str, Any]:
        """The record of request `rid`; `UnknownRequest` when the store has none."""
        parsed = split_request_id(rid)
        if parsed is None:
            raise UnknownRequest(
                f"'{rid}' is not a request id (they look like 20261202T061500-1a2b3c4d-0)"
            )
        data = self.backend.get(records_key(parsed[0])) or b""
        start = data.find(b'{"request_id": ' + json.dumps(rid).encode() + b",")
        if start < 0:
            raise UnknownRequest(f"no prediction with request id '{rid}' in {self.uri}")
        end = data.find(b"\n", start)
        record: dict[str, Any] = json.loads(data[start : end if end >= 0 else None])
        return record

    def labels_of(self, rid: str) -> list[dict[str, Any]]:
        """The labels given to request `rid` so far, oldest first."""
        segment, n = split_request_id(rid) or ("", 0)
        if self.backend.appends:
            data = self.backend.get(labels_key(segment)) or b""
            found = [json.loads(line) for line in data.splitlines() if line.strip()]
        else:
            keys = self.backend.keys(labels_prefix(segment, n))
            found = [json.loads(self.backend.get(key) or b"{}") for key in keys]
        return sorted((f for f in found if f.get("request_id") == rid), key=lambda f: f["time"])

    def label(
        self, corrections: Sequence[Correction], classes: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Keep the labels of `corrections`, all or none: every request must exist, every label
        be a class, and a request already labeled needs `replace` (the earlier label stays in
        the store; the new one names it). Returns the label entries written."""
        seen: set[str] = set()
        for correction in corrections:
            if correction.label not in classes:
                raise BadLabel(
                    f"'{correction.label}' is not a class of this model "
                    f"(one of {', '.join(classes)})"
                )
            if correction.request_id in seen:
                raise LabelConflict(
                    f"'{correction.request_id}' is labeled twice in one request", {}
                )
            seen.add(correction.request_id)
        try:
            records = [self.find(c.request_id) for c in corrections]
            return self._label(corrections, records)
        except OSError as exc:  # a read-only or full disk: the caller may retry later
            raise StoreError(f"{self.uri}: cannot keep the label now ({exc.strerror})") from None

    def _label(
        self, corrections: Sequence[Correction], records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        segments = sorted({split_request_id(c.request_id)[0] for c in corrections})  # type: ignore[index]
        with ExitStack() as locks:  # sorted: two writers cannot deadlock
            for segment in segments:
                locks.enter_context(self.backend.locked(labels_key(segment)))
            entries = []
            for correction, record in zip(corrections, records, strict=True):
                earlier = self.labels_of(correction.request_id)
                if earlier and not correction.replace:
                    raise LabelConflict(
                        f"'{correction.request_id}' is already labeled '{earlier[-1]['label']}' "
                        f'(by {earlier[-1]["source"]}); send "replace": true to correct it',
                        earlier[-1],
                    )
                entries.append(
                    {
                        "request_id": correction.request_id,
                        "image": record["image"],
                        "label": correction.label,
                        "source": correction.source,
                        "time": time.time(),
                        "model_name": record["model_name"],
                        "model_version": record["model_version"],
                        "predicted": record["predicted"],
                        "request_time": record["time"],
                        "replaces": earlier[-1]["label"] if earlier else None,
                    }
                )
            for entry in entries:
                self._write_label(entry)
        return entries

    def _write_label(self, entry: dict[str, Any]) -> None:
        segment, n = split_request_id(entry["request_id"])  # type: ignore[misc]
        line = (json.dumps(entry) + "\n").encode()
        if self.backend.appends:
            self.backend.append(labels_key(segment), line)
        else:
            self.backend.put(f"{labels_prefix(segment, n)}{time.time_ns()}.json", line)

    def _reserve(self, count: int, now: float) -> tuple[str, int]:
        """The segment and first number for `count` new records (a local segment rolls over by
        size, day or process; on S3 every call is a segment of its own)."""
        with self._lock:
            day = datetime.fromtimestamp(now, UTC)
            if (
                not self.backend.appends
                or self._segment is None
                or self._segment[1] != os.getpid()
                or self._segment_bytes >= self.segment_bytes
                or not self._segment[0].startswith(f"{day:%Y%m%d}")
            ):
                self._segment, self._next, self._segment_bytes = (
                    (new_segment(day), os.getpid()),
                    0,
                    0,
                )
            first = self._next
            self._next += count
            return self._segment[0], first

    def _put_once(self, key: str, data: Any) -> int:
        """Write a content-addressed key unless it is known to be there; bytes written."""
        if key in self._known:
            return 0
        payload: bytes = data()
        self.backend.put(key, payload, overwrite=False)
        if len(self._known) >= _KNOWN_IMAGES:
            self._known.clear()
        self._known.add(key)
        return len(payload)

    def _count(self, size: int) -> None:
        with self._lock:
            self._segment_bytes += size
            if self._used is not None:
                self._used += size

    def _check_cap(self) -> None:
        """`StoreFull` once a local store holds `cap_bytes` (S3 has no cap of ours: its
        lifecycle rules are the place for one)."""
        if not self.backend.appends:
            return
        now = time.monotonic()
        if self._used is None or now - self._measured_at > RESCAN_S:
            self._used, self._measured_at = _size_of(self.uri), now
        if self._used >= self.cap_bytes:
            raise StoreFull(
                f"{self.uri}: the store holds {self._used / 2**20:.0f} MiB, its cap is "
                f"{self.cap_bytes / 2**20:.0f} MiB; new requests are not kept (nothing is deleted: "
                "move or prune old records, or raise the cap)"
            )


def _size_of(root: str) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            with suppress(OSError):  # a file renamed away while we walk
                total += os.stat(os.path.join(folder, name)).st_size
    return total
