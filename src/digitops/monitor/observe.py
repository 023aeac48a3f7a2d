"""What the monitor sees in one pass: the window's requests and labels, measured.

- **Data drift**: Evidently (the `drift` stage's `detect`) on the image descriptors of the
  window's requests against the reference data (a dataset's test split, or any current-data
  source `digitops drift` reads).
- **Embedding drift**: the production model's embeddings of the window's requests (kept in each
  record) against its embeddings of the reference images, one column per dimension.
- **Prediction drift**: the predicted class and the confidence, the same way.
- **Live accuracy** per version that answered, and per version that shadowed, from the labels of
  the window's requests, with counts; how often a shadow agreed with the answer.
- **New labels**: labels kept since the newest registered version was made (what a retrain
  would learn that no version has).
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from digitops.config import Config
from digitops.data.current import load_current
from digitops.data.descriptors import COLUMNS, describe
from digitops.errors import ModelError, StoreError
from digitops.model.artifact import OnnxClassifier
from digitops.stages.drift import detect
from digitops.store.backends import Backend
from digitops.store.layout import decode_embedding
from digitops.store.reader import (
    LiveAccuracy,
    labels_in_force,
    live_accuracy,
    open_store,
    read_lines,
    with_descriptors,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Drift:
    """One drift test of the window against the reference."""

    kind: str  # descriptors, embeddings, predictions
    drifted: bool
    share: float  # of the columns tested
    columns: list[str]  # the drifted ones
    compared: int  # requests tested


@dataclass(frozen=True)
class Versions:
    """The registry's versions the monitor judges (None: no such alias)."""

    production: int | None
    candidate: int | None
    newest_created: float | None  # when the newest version was registered (epoch s)


@dataclass(frozen=True)
class Observation:
    """Everything one pass measured."""

    start: float
    end: float
    requests: int
    versions: Versions
    drift: list[Drift]  # empty when the window holds too few requests
    accuracy: list[LiveAccuracy]  # per version that answered
    shadow_accuracy: list[LiveAccuracy]  # per version that shadowed
    shadow_agreement: dict[str, float] = field(default_factory=dict)
    new_labels: int = 0
    challenger_requests: int = 0  # answered (canary) or shadowed by the candidate

    def accuracy_of(self, version: int | None) -> LiveAccuracy | None:
        """The live accuracy of `version`, answering or shadowing (None: no labels)."""
        tallies = [*self.accuracy, *self.shadow_accuracy]
        found = [a for a in tallies if a.model_version == str(version)]
        if not found:
            return None
        return LiveAccuracy(
            str(version), sum(a.correct for a in found), sum(a.labeled for a in found)
        )


def window_records(backend: Backend, start: float, end: float) -> list[dict[str, Any]]:
    """The records of requests made in [start, end] (only the days it covers are read)."""
    day, last = datetime.fromtimestamp(start, UTC).date(), datetime.fromtimestamp(end, UTC).date()
    records = []
    while day <= last:
        records += read_lines(backend, f"records/{day.isoformat()}/")
        day += timedelta(days=1)
    return [r for r in records if start <= float(r.get("time", 0.0)) <= end]


def observe(
    config: Config, store: str, reference: str, versions: Versions, now: float | None = None
) -> Observation:
    """Measure the window that ends `now` (default: now) of the store at `store`."""
    cfg = config.monitor
    end = time.time() if now is None else now
    start = end - cfg.window_hours * 3600
    backend = open_store(store)
    try:
        records = window_records(backend, start, end)
        labels = read_lines(backend, "labels/")
    except OSError as exc:
        raise StoreError(f"{store}: cannot be read ({exc})") from None
    in_window = {r["request_id"] for r in records}
    window_labels = [e for e in labels if e["request_id"] in in_window]
    drift: list[Drift] = []
    if len(records) >= cfg.min_requests and versions.production is not None:
        try:
            drift = _drift(config, backend, records, reference, str(versions.production))
        except (OSError, ValueError) as exc:  # a blob cut short, an image that is not one
            raise StoreError(f"{store}: a kept image cannot be read ({exc})") from None
    created = versions.newest_created or 0.0
    new = sum(1 for e in labels_in_force(labels).values() if float(e["time"]) > created)
    return Observation(
        start=start,
        end=end,
        requests=len(records),
        versions=versions,
        drift=drift,
        accuracy=live_accuracy(window_labels),
        shadow_accuracy=_shadow_accuracy(window_labels),
        shadow_agreement=_agreement(records),
        new_labels=new,
        challenger_requests=_served_by(records, versions.candidate),
    )


def _drift(
    config: Config,
    backend: Backend,
    records: list[dict[str, Any]],
    reference: str,
    production: str,
) -> list[Drift]:
    """The three drift tests; model columns use the production version's own requests."""
    rng = np.random.default_rng(0)
    sample = config.monitor.sample
    picked = [records[i] for i in sorted(rng.permutation(len(records))[:sample])]
    current = pd.DataFrame(with_descriptors(backend, picked))
    images = load_current(reference).images
    if images is None:
        raise StoreError(f"{reference}: the monitor's reference must be images (a dataset dir)")
    images = as_served(images[rng.permutation(len(images))[:sample]])
    table = pd.DataFrame(describe(images))
    found = [_test(config, "descriptors", table, current, list(COLUMNS), config.drift.drift_share)]
    own = current[current["model_version"].astype(str) == production]
    if len(own) >= config.monitor.min_requests and "embedding" in own:
        classifier = OnnxClassifier.load(_production_dir(config, production))
        logits, embeddings = classifier.outputs(images)
        probabilities = classifier.calibrated(logits)
        names = np.array(classifier.class_names)
        reference_model = pd.DataFrame(
            {"predicted": names[probabilities.argmax(1)], "confidence": probabilities.max(1)}
        )
        current_model = own[["predicted", "confidence"]].astype({"predicted": str})
        found.append(
            _test(
                config,
                "predictions",
                reference_model,
                current_model.reset_index(drop=True),
                ["predicted", "confidence"],
                config.drift.drift_share,
            )
        )
        if embeddings is not None:
            dims = [f"embedding_{i}" for i in range(embeddings.shape[1])]
            kept = np.stack([decode_embedding(text) for text in own["embedding"]])
            found.append(
                _test(
                    config,
                    "embeddings",
                    pd.DataFrame(embeddings, columns=dims),
                    pd.DataFrame(kept, columns=dims),
                    dims,
                    config.monitor.embedding_drift_share,
                )
            )
    return found


def as_served(images: np.ndarray) -> np.ndarray:
    """Reference images as a request brings them to the model: each encoded as an upload (dark
    ink on white, 112 px, PNG) and normalized by the service's own preprocessing. Compared raw,
    the normalization alone (resampling, re-centring) drifts most descriptors of calm traffic."""
    from PIL import Image

    from digitops.serving.preprocess import preprocess

    served = []
    for image in images:
        upload = io.BytesIO()
        Image.fromarray(255 - image).resize((112, 112)).save(upload, "PNG")
        served.append(np.round(preprocess(upload.getvalue()) * 255).astype(np.uint8))
    return np.stack(served) if served else images


def _test(
    config: Config,
    kind: str,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    share: float,
) -> Drift:
    cfg = config.drift.model_copy(update={"drift_share": share})
    verdict, _ = detect(cfg, reference[columns], current[columns], numerical=columns)
    return Drift(
        kind,
        bool(verdict["drifted"]),
        float(verdict["drifted_share"]),
        list(verdict["drifted_columns"]),
        len(current),
    )


def _production_dir(config: Config, production: str) -> Path:
    """The production version's model directory (downloaded from the registry)."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    uri = f"models:/{config.registry.model_name}/{production}"
    try:
        return Path(download_artifacts(artifact_uri=uri))
    except (MlflowException, OSError) as exc:
        raise ModelError(f"{uri}: cannot be downloaded ({exc})") from None


def _shadow_accuracy(labels: list[dict[str, Any]]) -> list[LiveAccuracy]:
    """Live accuracy of each version that shadowed labeled requests."""
    counts: dict[str, list[int]] = {}
    for entry in labels_in_force(labels).values():
        if shadow := entry.get("shadow"):
            tally = counts.setdefault(str(shadow["model_version"]), [0, 0])
            tally[0] += entry["label"] == shadow["predicted"]
            tally[1] += 1
    return [LiveAccuracy(version, c, n) for version, (c, n) in sorted(counts.items())]


def _served_by(records: list[dict[str, Any]], version: int | None) -> int:
    """Requests the version answered or shadowed."""
    name = str(version)
    return sum(
        1
        for r in records
        if str(r["model_version"]) == name
        or str((r.get("shadow") or {}).get("model_version")) == name
    )


def _agreement(records: list[dict[str, Any]]) -> dict[str, float]:
    """Per shadow version: the share of its predictions that matched the answer given."""
    counts: dict[str, list[int]] = {}
    for record in records:
        if shadow := record.get("shadow"):
            tally = counts.setdefault(str(shadow["model_version"]), [0, 0])
            tally[0] += shadow["predicted"] == record["predicted"]
            tally[1] += 1
    return {version: same / n for version, (same, n) in sorted(counts.items())}
