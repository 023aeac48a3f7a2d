"""The service's request log: one JSON line per prediction, readable by `digitops drift`.

Each line holds the time, the model version, the predicted class and confidence, and the
descriptors of the image as the model saw it (`digitops.data.descriptors`). Appends take an
exclusive `flock`, so several workers (or processes) can share one file, and a line is written
with a single `write` call, so a crash never leaves half a record followed by a good one.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import numpy as np

from digitops.data.descriptors import describe
from digitops.serving.predictor import Prediction


class RequestLog:
    """Appends prediction records to a JSON-lines file (created with its directory)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, images: np.ndarray, predictions: list[Prediction], version: str) -> None:
        """Record one line per image (`images`: N×28×28 floats in [0, 1], as predicted)."""
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
        data = ("\n".join(lines) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, data)
        finally:
            os.close(fd)  # closing releases the lock
