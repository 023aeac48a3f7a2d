"""Writing the request store: a record per prediction, a label per correction.

Images go in before the record that names them, and a record is one append (or one object), so
a reader never finds a record whose image is missing or half a record. A record holds what
only the moment of prediction knows (time, version, answer, embedding); what follows from the
image alone, its descriptors, the reader computes from the kept image, for many at once
(`digitops.store.reader.with_descriptors`): per request they would cost more than the rest of
the record together. A record that is
acknowledged (its request id returned) is on disk or in S3: the service answers after `record`.
Callers on the prediction path catch `StoreError` and `OSError`: a store that fails never fails
a prediction (`digitops.serving.app` counts it and answers anyway).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from digitops.errors import StoreError
from digitops.store.backends import Backend, open_backend
from digitops.store.layout import (
    MAX_ORIGINAL,
    encode_embedding,
    image_bytes,
    image_hash,
    kind_of,
    labels_key,
    labels_prefix,
    location,
    new_segment,
    pack_key,
    records_key,
    request_id,
    split_request_id,
)

SEGMENT_BYTES = 16 * 2**20  # a local records file rolls over at this size (and every day)
CAP_BYTES = 20 * 2**30  # a local store takes no new requests past this size (nothing is deleted)
RESCAN_S = 300.0  # how often a writer re-measures the store's size (other writers add to it)
_KNOWN_IMAGES = 100_000  # images and uploads a writer remembers having kept


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
    annotator: str | None = None  # who labeled, when the source knows (Label Studio does)
    reference: str | None = None  # the label where it came from (a Label Studio annotation)
    labeled_at: float | None = None  # when it was given there (`time`: when it was kept)


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
        self._segment: tuple[str, int, float] | None = None  # (name, pid, end of its UTC day)
        self._next = 0
        self._segment_bytes = 0
        self._pack_bytes = 0  # the current segment's pack size: where the next blob goes
        self._known: dict[str, str] = {}  # sha256 -> where this writer kept those bytes
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
        shadow: tuple[Sequence[Any], str] | None = None,
    ) -> list[str]:
        """Keep one prediction per image (`images`: N×28×28 uint8, as the model saw them;
        `predictions`: `digitops.serving.predictor.Prediction`s); returns their request ids.
        `shadow`: a challenger's predictions of the same images and its version, kept beside
        the answer (`shadow` in the record)."""
        self._check_cap()
        now = time.time()
        with self._lock:  # one writer's appends go in order: offsets in its pack are its own
            segment, first = self._reserve(len(images), now)
            pack = _Pack(segment, self._pack_bytes, self._known)
            lines = []
            for i, (image, upload, prediction) in enumerate(
                zip(images, uploads, predictions, strict=True)
            ):
                digest = image_hash(image)
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
                    "image_at": pack.add(digest, lambda image=image: image_bytes(image)),
                    "original": None,
                    "original_at": None,
                    "upload_bytes": len(upload),
                    "upload_type": kind_of(upload),
                }
                if len(upload) <= MAX_ORIGINAL:
                    sha = hashlib.sha256(upload).hexdigest()
                    record["original"] = sha
                    record["original_at"] = pack.add(sha, lambda upload=upload: upload)
                if embeddings is not None:
                    record["embedding"] = encode_embedding(embeddings[i])
                if shadow is not None:
                    record["shadow"] = {
                        "model_version": shadow[1],
                        "predicted": shadow[0][i].digit,
                        "confidence": shadow[0][i].confidence,
                    }
                lines.append(json.dumps(record))
            data = ("\n".join(lines) + "\n").encode()
            try:
                if pack.data:  # the images first: a record never names bytes not yet written
                    self._write(pack_key(segment), bytes(pack.data))
                self._write(records_key(segment), data)
            except BaseException:
                self._segment = None  # start a fresh segment: offsets stay exact
                raise
            self._pack_bytes += len(pack.data)
            self._segment_bytes += len(pack.data) + len(data)
            if len(self._known) + len(pack.new) > _KNOWN_IMAGES:
                self._known.clear()
            self._known.update(pack.new)
            if self._used is not None:
                self._used += len(pack.data) + len(data)
        return [request_id(segment, first + i) for i in range(len(images))]

    def _write(self, key: str, data: bytes) -> None:
        if self.backend.appends:
            self.backend.append(key, data)
        else:
            self.backend.put(key, data)

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
                        "image_at": record["image_at"],
                        "label": correction.label,
                        "source": correction.source,
                        "time": time.time(),
                        "model_name": record["model_name"],
                        "model_version": record["model_version"],
                        "predicted": record["predicted"],
                        "request_time": record["time"],
                        "replaces": earlier[-1]["label"] if earlier else None,
                        "shadow": record.get("shadow"),
                    }
                    | _provenance(correction)
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
        size, day or process; on S3 every call is a segment of its own). Under `_lock`."""
        if (
            not self.backend.appends
            or self._segment is None
            or self._segment[1] != os.getpid()
            or self._segment_bytes >= self.segment_bytes
            or now >= self._segment[2]
        ):
            start = datetime.fromtimestamp(now, UTC)
            midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
            day_ends = (midnight + timedelta(days=1)).timestamp()
            self._segment = (new_segment(start), os.getpid(), day_ends)
            self._next = self._segment_bytes = self._pack_bytes = 0
        first = self._next
        self._next += count
        return self._segment[0], first

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
                "move old days' records/ and blobs/ elsewhere, or raise --store-cap)"
            )


def _provenance(correction: Correction) -> dict[str, Any]:
    """Where a label came from, when its source says (absent for /feedback's labels)."""
    fields = {
        "annotator": correction.annotator,
        "reference": correction.reference,
        "labeled_at": correction.labeled_at,
    }
    return {name: value for name, value in fields.items() if value is not None}


def _size_of(root: str) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            with suppress(OSError):  # a file renamed away while we walk
                total += os.stat(os.path.join(folder, name)).st_size
    return total


class _Pack:
    """The blobs one `record` call adds to its segment's pack: each new one appended, a known
    one (kept before by this writer) pointed at where it already is."""

    def __init__(self, segment: str, offset: int, known: dict[str, str]) -> None:
        self.segment, self.offset, self.known = segment, offset, known
        self.data = bytearray()
        self.new: dict[str, str] = {}

    def add(self, digest: str, content: Any) -> str:
        """Where the bytes of `digest` are (`content()` makes them when they are new)."""
        if (at := self.known.get(digest) or self.new.get(digest)) is not None:
            return at
        payload: bytes = content()
        at = location(self.segment, self.offset + len(self.data), len(payload))
        self.data += payload
        self.new[digest] = at
        return at
