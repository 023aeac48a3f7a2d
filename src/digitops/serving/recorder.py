"""The service's side of the request store: keep every prediction, never fail one.

A prediction whose record cannot be written (a full or read-only disk, an unreachable bucket,
the store's cap) is answered anyway, without a request id: the failure is counted in `/metrics`
(`digitops_store_failures`) and logged at most once a minute. After a failure the store is left
alone for `PAUSE_S`, so an unreachable bucket costs one timeout, not one per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from digitops.errors import StoreError
from digitops.serving import metrics
from digitops.serving.predictor import Prediction, Predictor
from digitops.store.reader import live_accuracy, read_lines
from digitops.store.writer import StoreFull, StoreWriter

log = logging.getLogger(__name__)

WARN_EVERY_S = 60.0
PAUSE_S = 5.0


class Recorder:
    """Keeps predictions in `store`; `record` returns their request ids (None: not kept)."""

    def __init__(self, store: StoreWriter) -> None:
        self.store = store
        self._warned_at = -WARN_EVERY_S
        self._paused_until = 0.0
        self._labels_seen: dict[str, list[dict[str, Any]]] = {}  # S3 label objects read

    def record(
        self,
        images: np.ndarray,  # N×28×28 floats in [0, 1], as predicted
        uploads: Sequence[bytes],
        predictions: list[Prediction],
        embeddings: np.ndarray | None,
        predictor: Predictor,
        shadow: tuple[list[Prediction], str] | None = None,  # the challenger's, and its version
    ) -> list[str | None]:
        now = time.monotonic()
        if now < self._paused_until:
            metrics.STORE_FAILURES.labels("paused").inc(len(predictions))
            return [None] * len(predictions)
        pixels = (images * 255).round().astype(np.uint8)  # exact: preprocess gives k/255
        try:
            ids = self.store.record(
                pixels, uploads, predictions, embeddings, predictor.name, predictor.version, shadow
            )
        except (StoreError, OSError) as exc:
            reason = "full" if isinstance(exc, StoreFull) else "error"
            metrics.STORE_FAILURES.labels(reason).inc(len(predictions))
            self._paused_until = now + PAUSE_S
            if now - self._warned_at >= WARN_EVERY_S:
                self._warned_at = now
                log.warning("%s: predictions not kept (%s); answering anyway", self.store.uri, exc)
            return [None] * len(predictions)
        return list(ids)

    def measure(self) -> None:
        """Export live accuracy per model version from the store's labels (all faces')."""
        try:
            labels = read_lines(self.store.backend, "labels/", self._labels_seen)
        except (StoreError, OSError) as exc:
            log.warning("%s: cannot read labels for live accuracy (%s)", self.store.uri, exc)
            return
        for tally in live_accuracy(labels):
            metrics.LIVE_ACCURACY.labels(tally.model_version).set(tally.accuracy)
            metrics.LIVE_LABELED.labels(tally.model_version).set(tally.labeled)
