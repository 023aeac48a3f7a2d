"""KFP components, one per stage: map artifacts to paths, call the stage, record metrics.

No `from __future__ import annotations` here: KFP reads the real annotation types.
Each runs in the project's component image (`DIGITOPS_IMAGE`), which has digitops and kfp
installed, so nothing is pip-installed at run time. Imports live inside the bodies, as KFP needs.
"""

import os

from kfp import dsl
from kfp.dsl import (
    HTML,
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from digitops import __version__

DEFAULT_IMAGE = f"ghcr.io/digitops/digitops:{__version__}"
IMAGE = os.environ.get("DIGITOPS_IMAGE") or DEFAULT_IMAGE
# The components below, in pipeline order.
STAGES = ("prepare", "tune", "train", "evaluate", "explain", "drift", "register", "deploy")


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
def tune(
    dataset: Input[Dataset],
    trials: int,
    seed: int,
    mlflow_tracking_uri: str,
    best_params: Output[Artifact],
    trial_table: Output[Markdown],
    report: Output[HTML],
    metrics: Output[Metrics],
) -> None:
    """Ray Tune search (0 trials: none); best_params feeds train. Ray: $RAY_ADDRESS or local."""
    import shutil
    import tempfile
    from pathlib import Path

    from digitops.config import load_config
    from digitops.stages import tune as stage
    from digitops.stages import tune_report

    sets = [f"tune.trials={trials}", f"tune.seed={seed}", f"train.seed={seed}"]
    config = load_config(
        None, sets + ([f"tracking.uri={mlflow_tracking_uri}"] if mlflow_tracking_uri else [])
    )
    out = Path(tempfile.mkdtemp()) / "tune"
    result = stage.run(config, Path(dataset.path), out)
    shutil.copyfile(out / stage.BEST, best_params.path)
    shutil.copyfile(out / tune_report.TRIALS_MD, trial_table.path)
    shutil.copyfile(out / tune_report.REPORT, report.path)
    best_params.metadata.update(searched=result.searched, params=result.best_params)
    metrics.log_metric("trials", result.trials)
    metrics.log_metric("failed_trials", result.failed)
    if result.best_val_accuracy is not None:
        metrics.log_metric("best_val_accuracy", result.best_val_accuracy)
    if result.baseline_val_accuracy is not None:
        metrics.log_metric("baseline_val_accuracy", result.baseline_val_accuracy)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(
    dataset: Input[Dataset],
    params: Input[Artifact],
    epochs: int,
    seed: int,
    mlflow_tracking_uri: str,
    model: Output[Model],
    metrics: Output[Metrics],
) -> str:
    """Train with Lightning on the tuned params, export ONNX; returns the MLflow run id."""
    from pathlib import Path

    from digitops.config import load_config
    from digitops.stages import train as stage
    from digitops.stages.tune import load_best_params

    sets = [f"train.epochs={epochs}", f"train.seed={seed}", "train.progress=false"]
    config = load_config(
        None, sets + ([f"tracking.uri={mlflow_tracking_uri}"] if mlflow_tracking_uri else [])
    )
    tuned = load_best_params(Path(params.path))
    result = stage.run(config, Path(dataset.path), Path(model.path), tuned)
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
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    report: Output[HTML],
) -> bool:
    """Score the ONNX model on the test split; returns whether accuracy meets the threshold."""
    import json
    import shutil
    from pathlib import Path

    from digitops.config import load_config
    from digitops.stages import evaluate as stage

    config = load_config(
        None, [f"tracking.uri={mlflow_tracking_uri}"] if mlflow_tracking_uri else []
    )
    out = Path(evaluation.path)
    result = stage.run(config, Path(model.path), Path(dataset.path), out)
    summary = json.loads((out / stage.METRICS).read_text())
    for name in ("accuracy", "misclassified"):
        metrics.log_metric(name, summary[name])
    metrics.log_metric("macro_f1", summary["macro"]["f1"])
    confusion.log_confusion_matrix(list(summary["per_class"]), summary["confusion_matrix"])
    shutil.copyfile(out / stage.REPORT, report.path)
    return result.accuracy >= accuracy_threshold


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def explain(
    dataset: Input[Dataset],
    model: Input[Model],
    mlflow_tracking_uri: str,
    metrics: Output[Metrics],
    report: Output[HTML],
) -> None:
    """Captum attributions of test digits and their faithfulness (deletion curves)."""
    import shutil
    import tempfile
    from pathlib import Path

    from digitops.config import load_config
    from digitops.stages import explain as stage

    config = load_config(
        None, [f"tracking.uri={mlflow_tracking_uri}"] if mlflow_tracking_uri else []
    )
    out = Path(tempfile.mkdtemp()) / "explanation"
    result = stage.run(config, Path(model.path), Path(dataset.path), out)
    for name, ratio in result.auc_ratio.items():
        metrics.log_metric(f"{name}_auc_ratio", ratio)
        metrics.log_metric(f"{name}_drop_at_10", result.drop_at_10[name])
    metrics.log_metric("random_drop_at_10", result.random_drop_at_10)
    shutil.copyfile(out / stage.REPORT, report.path)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def drift(
    dataset: Input[Dataset],
    model: Input[Model],
    current_data: str,
    mlflow_tracking_uri: str,
    verdict: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[HTML],
) -> bool:
    """Evidently drift of the current data (empty: the test split) vs the training data;
    returns whether the data drifted."""
    import shutil
    import tempfile
    from pathlib import Path

    from digitops.config import load_config
    from digitops.stages import drift as stage

    config = load_config(
        None, [f"tracking.uri={mlflow_tracking_uri}"] if mlflow_tracking_uri else []
    )
    out = Path(tempfile.mkdtemp()) / "drift"
    result = stage.run(config, Path(dataset.path), current_data or None, out, Path(model.path))
    shutil.copyfile(out / stage.VERDICT, verdict.path)
    shutil.copyfile(out / stage.REPORT, report.path)
    verdict.metadata.update(drifted=result.drifted, drifted_columns=result.drifted_columns)
    metrics.log_metric("drifted_share", result.drifted_share)
    metrics.log_metric("current_images", result.current_images)
    return result.drifted


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register(
    model: Input[Model],
    evaluation: Input[Artifact],
    drift_verdict: Input[Artifact],
    model_name: str,
    accuracy_threshold: float,
    drift_blocks_promotion: bool,
    approval: str,
    pipeline_run: str,
    mlflow_tracking_uri: str,
    registered: Output[Artifact],
) -> bool:
    """Register the model in MLflow and gate it (accuracy, regression, drift); returns whether
    it passed (alias `candidate`; with approval 'auto' also `production`)."""
    import json
    from pathlib import Path

    from digitops.config import load_config
    from digitops.stages import register as stage

    sets = [
        f"registry.model_name={model_name}",
        f"registry.accuracy_threshold={accuracy_threshold}",
        f"registry.drift_blocks={drift_blocks_promotion}",
        f"registry.approval={approval}",
    ]
    config = load_config(
        None, sets + ([f"tracking.uri={mlflow_tracking_uri}"] if mlflow_tracking_uri else [])
    )
    result = stage.run(
        config, Path(model.path), Path(evaluation.path), Path(drift_verdict.path), pipeline_run
    )
    summary = {
        "model_name": result.model_name,
        "version": result.version,
        "gate_passed": result.gate.passed,
        "gate_reasons": result.gate.reasons,
        "aliases": result.aliases,
        "model_uri": f"models:/{result.model_name}/{result.version}",
    }
    Path(registered.path).write_text(json.dumps(summary, indent=2))
    registered.metadata.update(summary)
    return result.gate.passed


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy(
    dataset: Input[Dataset],
    registered: Input[Artifact],
    target: str,
    min_accuracy: float,
    mlflow_tracking_uri: str,
    deployment: Output[Artifact],
    metrics: Output[Metrics],
) -> str:
    """Serve the registered version (local service or Kubernetes), smoke-test it over HTTP;
    returns the endpoint. A local deployment is recorded in ./artifacts/deployment as well."""
    import json
    import shutil
    from pathlib import Path

    from digitops.config import load_config
    from digitops.stages import deploy as stage

    sets = [f"deploy.target={target}", f"deploy.min_accuracy={min_accuracy}"]
    config = load_config(
        None, sets + ([f"tracking.uri={mlflow_tracking_uri}"] if mlflow_tracking_uri else [])
    )
    model_uri = json.loads(Path(registered.path).read_text())["model_uri"]
    state = Path("artifacts") / "deployment"
    result = stage.run(config, model_uri, Path(dataset.path), state)
    shutil.copyfile(state / stage.RECORD, deployment.path)
    deployment.metadata.update(endpoint=result.endpoint, model=model_uri)
    metrics.log_metric("smoke_accuracy", result.smoke_accuracy)
    return result.endpoint
