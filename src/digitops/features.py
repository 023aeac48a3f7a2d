"""The feature store (Feast) over the request store: its records and labels as feature views.

`apply` exports the store's records and labels to Parquet in the feature repository
(`feature_repo/data/`, Feast's offline store on files) and runs `feast apply` there;
`materialize` loads the latest values into the online store (SQLite); `labeled_frame` is the
point-in-time join monitoring and labeling read: each label in force with the prediction of the
request it labels, as it was when that request was answered (a version that predicted the same
image later is not joined to it). Feast is imported only here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from digitops.data.descriptors import COLUMNS
from digitops.errors import StoreError
from digitops.store.layout import decode_embedding
from digitops.store.reader import open_store, read_lines, with_descriptors

DEFAULT_REPO = Path("feature_repo")
PREDICTIONS = Path("data/predictions.parquet")
LABELS = Path("data/labels.parquet")
PREDICTION_FEATURES = ("request_id", "model_name", "model_version", "predicted", "confidence")


@dataclass(frozen=True)
class Exported:
    """What `apply` put in the feature repository."""

    repo: Path
    predictions: int
    labels: int


def export(store: str, repo: Path) -> Exported:
    """Write the store's records and labels as the repository's Parquet sources."""
    _check_repo(repo)
    backend = open_store(store)
    records = with_descriptors(backend, read_lines(backend, "records/"))
    labels = read_lines(backend, "labels/")
    _write(prediction_table(records), repo / PREDICTIONS)
    _write(label_table(labels), repo / LABELS)
    return Exported(repo, len(records), len(labels))


def apply(store: str, repo: Path) -> Exported:
    """Export the store, then `feast apply` the repository's definitions."""
    exported = export(store, repo)
    feast = Path(sys.executable).with_name("feast")
    command = [str(feast) if feast.exists() else "feast", "-c", str(repo), "apply"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise StoreError(f"feast apply in {repo} failed:\n" + "\n".join(tail))
    return exported


def materialize(repo: Path, until: datetime | None = None) -> datetime:
    """Load the latest prediction and label of each image into the online store."""
    end = until or datetime.now(UTC)
    _feature_store(repo).materialize_incremental(end_date=end)
    return end


def labeled_frame(repo: Path) -> pd.DataFrame:
    """Each label in force, joined point-in-time to the prediction of the request it labels
    (columns: image, labeled_request, label, labeler, label_time, request_time and the
    `predictions__*` features)."""
    path = repo / LABELS
    if not path.is_file():
        raise StoreError(f"{repo}: no {LABELS}; run `digitops features apply` first")
    labels = pd.read_parquet(path)
    if labels.empty:
        return labels
    latest = labels.sort_values("event_timestamp").groupby("labeled_request", sort=False).tail(1)
    entities = latest.rename(columns={"event_timestamp": "label_time"}).assign(
        event_timestamp=latest["request_time"]
    )[["image", "labeled_request", "label", "labeler", "label_time", "event_timestamp"]]
    features = [f"predictions:{name}" for name in PREDICTION_FEATURES]
    job = _feature_store(repo).get_historical_features(
        entity_df=entities, features=features, full_feature_names=True
    )
    frame: pd.DataFrame = job.to_df().rename(columns={"event_timestamp": "request_time"})
    return frame.sort_values(["request_time", "labeled_request"]).reset_index(drop=True)


def prediction_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per prediction: the image, when, by which version, what, and its features."""
    columns = ["image", "event_timestamp", "created", *PREDICTION_FEATURES, "embedding", *COLUMNS]
    if not records:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame.from_records(records)
    table["event_timestamp"] = _stamp(table["time"])
    table["created"] = pd.to_datetime(table["time"], unit="s", utc=True)
    table["confidence"] = table["confidence"].astype("float32")
    for name in COLUMNS:
        table[name] = table[name].astype("float32")
    table["embedding"] = [
        decode_embedding(e).tolist() if isinstance(e, str) else None
        for e in table.get("embedding", [None] * len(table))
    ]
    table["model_version"] = table["model_version"].astype(str)
    return table[columns]


def label_table(labels: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per label given (replaced ones too), stamped with the time it was given."""
    columns = [
        "image",
        "event_timestamp",
        "created",
        "label",
        "labeler",
        "labeled_request",
        "request_time",
    ]
    if not labels:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame.from_records(labels)
    table["event_timestamp"] = _stamp(table["time"])
    table["created"] = pd.to_datetime(table["time"], unit="s", utc=True)
    table["request_time"] = _stamp(table["request_time"])
    table = table.rename(columns={"source": "labeler", "request_id": "labeled_request"})
    return table[columns]


def _stamp(seconds: pd.Series) -> pd.Series:
    """UTC timestamps to the millisecond: a label's `request_time` must equal its
    prediction's `event_timestamp` exactly, and Feast drops nanoseconds on the way."""
    return pd.to_datetime(seconds, unit="s", utc=True).dt.floor("ms")


def _feature_store(repo: Path) -> Any:
    from feast import FeatureStore

    _check_repo(repo)
    return FeatureStore(repo_path=str(repo.resolve()))


def _check_repo(repo: Path) -> None:
    if not (repo / "feature_store.yaml").is_file():
        raise StoreError(f"{repo}: not a Feast feature repository (no feature_store.yaml)")


def _write(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def copy_repo(repo: Path, target: Path) -> Path:
    """A copy of the feature repository's definitions (not its data), e.g. for a test."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("feature_store.yaml", "definitions.py"):
        shutil.copy2(repo / name, target / name)
    return target
