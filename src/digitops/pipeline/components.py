"""KFP components, one per stage: map artifacts to paths, call the stage, record metrics.

No `from __future__ import annotations` here: KFP reads the real annotation types.
Each runs in the project's component image (`DIGITOPS_IMAGE`), which has digitops and kfp
installed, so nothing is pip-installed at run time. Imports live inside the bodies, as KFP needs.
"""

import os

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from digitops import __version__

DEFAULT_IMAGE = f"ghcr.io/digitops/digitops:{__version__}"
IMAGE = os.environ.get("DIGITOPS_IMAGE") or DEFAULT_IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare(
    source: str, limit: int, seed: int, dataset: Output[Dataset], stats: Output[Metrics]
) -> None:
    """Build the versioned dataset directory (limit 0 = all images)."""
    from pathlib import Path

    from digitops.config import load_config
    from digitops.stages import prepare as stage

    sets = [f"prepare.source={source}", f"prepare.seed={seed}"]
    config = load_config(None, sets + ([f"prepare.limit={limit}"] if limit > 0 else []))
    result = stage.run(config, Path(dataset.path))
    dataset.metadata.update(version=result.version, classes=len(result.class_names))
    for split, size in result.sizes.items():
        stats.log_metric(f"{split}_images", size)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(
    dataset: Input[Dataset],
    epochs: int,
    seed: int,
    mlflow_tracking_uri: str,
    model: Output[Model],
    metrics: Output[Metrics],
) -> str:
    """Train with Lightning, export ONNX; returns the MLflow run id."""
    from pathlib import Path

    from digitops.config import load_config
    from digitops.stages import train as stage

    sets = [f"train.epochs={epochs}", f"train.seed={seed}", "train.progress=false"]
    config = load_config(
        None, sets + ([f"tracking.uri={mlflow_tracking_uri}"] if mlflow_tracking_uri else [])
    )
    result = stage.run(config, Path(dataset.path), Path(model.path))
    model.metadata.update(
        framework="onnx", parameters=result.parameters, mlflow_run_id=result.mlflow_run_id or ""
    )
    metrics.log_metric("val_accuracy", result.val_accuracy)
    metrics.log_metric("parameters", result.parameters)
    metrics.log_metric("epochs", result.epochs)
    metrics.log_metric("train_minutes", round(result.seconds / 60, 2))
    return result.mlflow_run_id or ""


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    dataset: Input[Dataset],
    model: Input[Model],
    accuracy_threshold: float,
    mlflow_tracking_uri: str,
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    report: Output[HTML],
) -> bool:
    """Score the ONNX model on the test split; returns whether accuracy meets the threshold."""
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from digitops.config import load_config
    from digitops.stages import evaluate as stage

    config = load_config(
        None, [f"tracking.uri={mlflow_tracking_uri}"] if mlflow_tracking_uri else []
    )
    out = Path(tempfile.mkdtemp()) / "evaluation"
    result = stage.run(config, Path(model.path), Path(dataset.path), out)
    summary = json.loads((out / stage.METRICS).read_text())
    for name in ("accuracy", "misclassified"):
        metrics.log_metric(name, summary[name])
    metrics.log_metric("macro_f1", summary["macro"]["f1"])
    confusion.log_confusion_matrix(list(summary["per_class"]), summary["confusion_matrix"])
    shutil.copyfile(out / stage.REPORT, report.path)
    return result.accuracy >= accuracy_threshold
