"""Stage `drift`: Evidently data drift between the training data and current data.

Both sides become tables of image descriptors (`digitops.data.descriptors`), plus the model's
predicted class and confidence when a model is given; Evidently's `DataDriftPreset` tests each
column. Outputs: `report.html` (Evidently's report) and `drift.json` (the verdict, the drifted
share and every column's score), tracked as an MLflow run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from digitops import __version__
from digitops.config import Config, DriftConfig
from digitops.contracts import DriftVerdict
from digitops.data.current import Current, load_current
from digitops.data.dataset import load_dataset
from digitops.data.descriptors import COLUMNS, describe
from digitops.fileio import atomic_dir
from digitops.model.artifact import OnnxClassifier, check_classes, load_card
from digitops.results import StageResult, log_to_mlflow, metric

log = logging.getLogger(__name__)

VERDICT = DriftVerdict.file_name
REPORT = "report.html"
PREDICTION_COLUMNS = ("predicted", "confidence")


@dataclass(frozen=True)
class DriftResult(StageResult):
    """The verdict and the numbers behind it."""

    out_dir: Path
    drifted: bool = metric()
    drifted_share: float = metric()
    drifted_columns: list[str] = dataclass_field(default_factory=list)
    reference_images: int = metric(default=0)
    current_images: int = metric(default=0)
    seconds: float = 0.0
    drift_score: dict[str, float] = metric(default_factory=dict)  # `<column>_drift_score`

    def heading(self) -> str:
        return "drift detected" if self.drifted else "no drift"


def run(
    config: Config,
    reference_dir: Path,
    current: str | Path | None,
    out_dir: Path,
    model_dir: Path | None = None,
) -> DriftResult:
    """Compare the training data of `reference_dir` with `current` (default: its test split)."""
    started = time.perf_counter()
    data = load_current(current if current else reference_dir)
    dataset = load_dataset(reference_dir)
    reference = np.concatenate([dataset.split("train").images, dataset.split("val").images])
    model = _model(model_dir, dataset.class_names) if config.drift.predictions else None

    reference_table = descriptor_table(reference, model)
    current_table = _current_table(data, model)
    found, snapshot = detect(config.drift, reference_table, current_table)
    verdict = DriftVerdict.model_validate(
        found
        | {
            "reference": {"source": str(reference_dir), "version": dataset.version},
            "current": {"source": data.source, "kind": data.kind},
            "reference_images": len(reference_table),
            "current_images": len(current_table),
            "model": str(model_dir) if model is not None else None,
        }
    )
    with atomic_dir(out_dir, marker=VERDICT) as tmp:
        snapshot.save_html(str(tmp / REPORT))
        verdict.write(tmp)
    result = DriftResult(
        out_dir,
        verdict.drifted,
        verdict.drifted_share,
        verdict.drifted_columns,
        verdict.reference_images,
        verdict.current_images,
        time.perf_counter() - started,
        {name: column["score"] for name, column in verdict.columns.items()},
    )
    if config.tracking.enabled:
        _track(config, result, verdict)
    return result


def descriptor_table(images: np.ndarray, model: Any | None) -> pd.DataFrame:
    """Descriptors of each image, with the model's predicted class and confidence if given."""
    table = pd.DataFrame(describe(images))
    if model is not None:
        predicted, confidence = model(images)
        table["predicted"], table["confidence"] = predicted, confidence
    return table


def detect(
    cfg: DriftConfig,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: list[str] | None = None,
) -> tuple[dict[str, Any], Any]:
    """Run Evidently's data-drift preset on the columns both tables have (numerical: the
    descriptors and the confidence, or the columns named); return the verdict and the Evidently
    snapshot (for its HTML report)."""
    from evidently import DataDefinition, Report
    from evidently import Dataset as EvidentlyDataset
    from evidently.presets import DataDriftPreset

    wanted = numerical if numerical is not None else [*COLUMNS, "confidence"]
    numerical = [c for c in wanted if c in reference and c in current and c != "predicted"]
    categorical = [c for c in ["predicted"] if c in reference and c in current]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    preset = DataDriftPreset(
        num_method=cfg.num_method,
        num_threshold=cfg.num_threshold,
        cat_method=cfg.cat_method,
        cat_threshold=cfg.cat_threshold,
        drift_share=cfg.drift_share,
    )
    columns = numerical + categorical
    snapshot = Report([preset]).run(
        EvidentlyDataset.from_pandas(current[columns], data_definition=definition),
        EvidentlyDataset.from_pandas(reference[columns], data_definition=definition),
    )
    scores = _column_scores(snapshot.dict())
    drifted = [name for name, score in scores.items() if score["drifted"]]
    share = len(drifted) / len(scores)
    return {
        "drifted": share >= cfg.drift_share,
        "drifted_share": share,
        "drifted_columns": drifted,
        "drift_share_threshold": cfg.drift_share,
        "columns": scores,
        "evidently_version": _evidently_version(),
        "digitops_version": __version__,
    }, snapshot


def _column_scores(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per column: Evidently's score, method and threshold, and whether it drifted (distance
    methods drift at or above the threshold)."""
    scores = {}
    for entry in report["metrics"]:
        spec = entry["config"]
        if spec["type"].endswith("ValueDrift"):
            score = float(entry["value"])
            scores[spec["column"]] = {
                "score": score,
                "method": spec["method"],
                "threshold": spec["threshold"],
                "drifted": score >= spec["threshold"],
            }
    return scores


def _current_table(data: Current, model: Any | None) -> pd.DataFrame:
    if data.images is not None:
        return descriptor_table(data.images, model)
    assert data.table is not None
    keep = [c for c in [*COLUMNS, *PREDICTION_COLUMNS] if c in data.table]
    table = data.table[keep].copy()
    if "predicted" in table:
        table["predicted"] = table["predicted"].astype(str)
    return table


def _model(model_dir: Path | None, class_names: list[str]) -> Any | None:
    """`images -> (class names, confidences)` with the ONNX model, or None without a model."""
    if model_dir is None:
        return None
    check_classes(model_dir, load_card(model_dir), class_names)
    classifier = OnnxClassifier.load(model_dir)
    names = np.array(class_names)

    def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs = classifier.probabilities(images)
        return names[probs.argmax(axis=1)], probs.max(axis=1)

    return predict


def _evidently_version() -> str:
    from importlib.metadata import version

    return version("evidently")


def _track(config: Config, result: DriftResult, verdict: DriftVerdict) -> None:
    import mlflow

    from digitops.tracking import start_run

    with start_run(config.tracking, run_name="drift"):
        mlflow.set_tags(
            {
                "stage": "drift",
                "dataset_version": verdict.reference["version"],
                "current_source": verdict.current["source"],
                "drift_verdict": "drift" if result.drifted else "no drift",
            }
        )
        log_to_mlflow(result)
        mlflow.log_artifacts(str(result.out_dir), artifact_path="drift")
