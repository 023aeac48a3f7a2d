"""The service's request log: one JSON line per prediction, readable by `digitops drift`.

Each line holds the time, the model version, the predicted class and confidence, and the
descriptors of the image as the model saw it (`digitops.data.descriptors`). Appends take an
exclusive `flock`, so several workers (or processes) can share one file, and a line is written
with a single `write` call, so a crash never leaves half a record followed by a good one.

The log never takes predictions down: a record that cannot be written (full disk, no
permission) is counted in `/metrics` and logged, and the answer still goes out. When the file
passes `max_bytes` it is renamed to `<stem>-<UTC time>.jsonl` beside it (under the same lock, so
no worker writes into a file that is being rotated away) and a new one begins; rotated files are
kept, never deleted (`digitops drift` reads any of them).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from digitops.data.descriptors import describe
from digitops.serving import metrics
from digitops.serving.predictor import Prediction

log = logging.getLogger(__name__)

MAX_BYTES = 64 * 2**20  # a log file rotates once it is this large
WARN_EVERY_S = 60.0  # at most one warning a minute while writes keep failing


class RequestLog:
    """Appends prediction records to a JSON-lines file (its directory made on first write)."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._warned_at = -WARN_EVERY_S

    def append(self, images: np.ndarray, predictions: list[Prediction], version: str) -> bool:
        """Record one line per image (`images`: N×28×28 floats in [0, 1], as predicted); False
        (counted and logged, never raised) when the records could not be written."""
        try:
            self._write(_lines(images, predictions, version))
        except OSError as exc:
            metrics.REQUEST_LOG_FAILURES.inc(len(predictions))
            now = time.monotonic()
            if now - self._warned_at >= WARN_EVERY_S:
                self._warned_at = now
                log.warning("%s: cannot record predictions (%s); answering anyway", self.path, exc)
            return False
        return True

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = self._open_locked()
        try:
            os.write(fd, data)
            if os.fstat(fd).st_size >= self.max_bytes:
                self._rotate()
        finally:
            os.close(fd)  # closing releases the lock

    def _open_locked(self) -> int:
        """The log file, open for appending under an exclusive lock; reopened when another
        worker rotated it away while this one waited for the lock."""
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def _rotate(self) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        os.rename(self.path, self.path.with_name(f"{self.path.stem}-{stamp}{self.path.suffix}"))


def _lines(images: np.ndarray, predictions: list[Prediction], version: str) -> bytes:
    descriptors = describe((images * 255).round().astype(np.uint8))
    now = time.time()
    lines = []
    for i, prediction in enumerate(predictions):
        record: dict[str, float | str] = {
            name: float(values[i]) for name, values in descriptors.items()
        }
        record |= {
            "time": now,
            "model_version": version,
            "predicted": prediction.digit,
            "confidence": prediction.confidence,
        }
        lines.append(json.dumps(record))
    return ("\n".join(lines) + "\n").encode()
