"""The service's Prometheus metrics, one set per process and summed over every worker.

uvicorn's workers are separate processes. With `$PROMETHEUS_MULTIPROC_DIR` set before they
start (`digitops.serving.main.serve` does it), prometheus_client's multiprocess mode keeps each
process's values in files there and `/metrics` adds them up, so a scrape sees the whole service
whichever worker answers it. With one process, the default registry is read directly.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

PREDICTIONS = Counter("digitops_predictions", "Images predicted")
REJECTED = Counter(
    "digitops_rejected_requests", "Requests refused or failed, by HTTP status", ["status"]
)
LATENCY = Histogram("digitops_predict_seconds", "Preprocess + inference time per request")
REQUEST_LOG_FAILURES = Counter(
    "digitops_request_log_failures", "Predictions answered but not recorded in the request log"
)


def rejected(status: int) -> None:
    """Count one request answered with `status` (4xx, or a 5xx from a defect)."""
    REJECTED.labels(str(status)).inc()


def exposition() -> tuple[bytes, str]:
    """The metrics page of the whole service, and its content type."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def prepare_multiprocess_dir(directory: Path) -> None:
    """Make `directory` an empty home for the workers' metric files (values of an earlier run
    would otherwise be added to this one's)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
