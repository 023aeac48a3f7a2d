"""The service's Prometheus metrics, one set per process and summed over every worker.

uvicorn's workers are separate processes. With `$PROMETHEUS_MULTIPROC_DIR` set before they
start (`digitops.serving.main.serve` makes the directory), prometheus_client's multiprocess mode
keeps each process's values in files there and `/metrics` adds them up, so a scrape sees the
whole service whichever worker answers it. With one process, the default registry is read.
"""

from __future__ import annotations

import os
import shutil
import tempfile

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OWNED_ENV = "DIGITOPS_METRICS_DIR"  # the directory `serve` made for its workers

# Only a directory `serve` made decides how this process keeps its metrics (prometheus_client
# decides when it is imported, below). One inherited from elsewhere (importing Feast sets
# PROMETHEUS_MULTIPROC_DIR in that process and so in its children) may be gone by now or be
# another program's: metric values written there would crash the import or never be shown.
if os.environ.get(MULTIPROC_ENV) != os.environ.get(OWNED_ENV):
    os.environ.pop(MULTIPROC_ENV, None)
    os.environ.pop("prometheus_multiproc_dir", None)

from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

PREDICTIONS = Counter("digitops_predictions", "Images predicted")
REJECTED = Counter(
    "digitops_rejected_requests", "Requests refused or failed, by HTTP status", ["status"]
)
LATENCY = Histogram("digitops_predict_seconds", "Preprocess + inference time per request")
STORE_FAILURES = Counter(
    "digitops_store_failures",
    "Predictions answered but not kept in the request store, by reason",
    ["reason"],  # error (write failed), full (the store's cap), paused (after an error)
)
UNSURE = Counter(
    "digitops_unsure_predictions",
    "Images answered 'unsure': calibrated confidence below the service's floor",
)
LABELS = Counter("digitops_labels", "Labels kept through /feedback")
CHALLENGER = Counter(
    "digitops_challenger_predictions",
    "Images the challenger version predicted, by rollout mode (canary: it answered)",
    ["mode"],
)
# Read from the store's labels (whichever worker or face took them), so every worker reports
# the same value: the most recent one wins when the workers' files are added up.
LIVE_ACCURACY = Gauge(
    "digitops_live_accuracy",
    "Accuracy on labeled production requests, per model version that predicted them",
    ["model_version"],
    multiprocess_mode="mostrecent",
)
LIVE_LABELED = Gauge(
    "digitops_live_labeled_requests",
    "Labeled production requests behind digitops_live_accuracy (few labels: no trend yet)",
    ["model_version"],
    multiprocess_mode="mostrecent",
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


def new_multiprocess_dir() -> str:
    """A fresh, empty directory for the workers' metric files, named in the environment they
    inherit (before any of them imports this module)."""
    made = tempfile.mkdtemp(prefix="digitops-metrics-")
    os.environ[MULTIPROC_ENV] = os.environ[OWNED_ENV] = made
    return made


def drop_multiprocess_dir(made: str) -> None:
    shutil.rmtree(made, ignore_errors=True)
    for name in (MULTIPROC_ENV, OWNED_ENV):
        if os.environ.get(name) == made:
            del os.environ[name]
