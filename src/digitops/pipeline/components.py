"""KFP components, one per stage: map artifacts to paths, call the stage, record its metrics.

No `from __future__ import annotations` here: KFP reads the real annotation types.
Each runs in the project's component image (`DIGITOPS_IMAGE`), which has digitops and kfp
installed, so nothing is pip-installed at run time. Imports live inside the bodies, as KFP needs.
Inputs are named as the pipeline's parameters and arrive typed; `config_values` turns them into
config values by dotted key (`digitops.pipeline.parameters`, the one table), validated by the
same schema as the CLI's. A stage's metrics go out under the names its result gives them.
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
# Components of their own, for other pipelines (not tasks of `digits_pipeline`).
STANDALONE = ("batch_predict",)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare(
    source: str,
    mnist_ratio: float,
    limit: int,
    prepare_seed: int,
    dataset: Output[Dataset],
    stats: Output[Metrics],
) -> None:
    """Build the versioned dataset directory (limit 0 = all images; a request-store source is
    its labeled images, with `mnist_ratio` MNIST images per production image mixed in)."""
    from pathlib import Path

    from digitops.config import load_config
    from digitops.pipeline.parameters import config_values
    from digitops.results import log_to_kfp
    from digitops.stages import prepare as stage

    values = config_values(
        source=source, mnist_ratio=mnist_ratio, limit=limit, prepare_seed=prepare_seed
    )
    result = stage.run(load_config(values=values), Path(dataset.path))
    dataset.metadata.update(version=result.version, classes=len(result.class_names))
    log_to_kfp(result, stats)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def tune(
    dataset: Input[Dataset],
    tune_trials: int,
    tune_seed: int,
    ray_address: str,
    mlflow_tracking_uri: str,
    best_params: Output[Artifact],
    trial_table: Output[Markdown],
    report: Output[HTML],
    metrics: Output[Metrics],
) -> None:
    """Ray Tune search (0 trials: none); best_params feeds train. Ray: `ray_address` (a
    cluster's, e.g. ray://head:10001), else $RAY_ADDRESS, else inside the task."""
    import shutil
    import tempfile
    from pathlib import Path

    from digitops.config import load_config
    from digitops.pipeline.parameters import config_values
    from digitops.results import log_to_kfp
    from digitops.stages import tune as stage
    from digitops.stages import tune_report

    values = config_values(
        tune_trials=tune_trials,
        tune_seed=tune_seed,
        ray_address=ray_address,
        mlflow_tracking_uri=mlflow_tracking_uri,
    )
    out = Path(tempfile.mkdtemp()) / "tune"
    result = stage.run(load_config(values=values), Path(dataset.path), out)
    shutil.copyfile(out / stage.BEST, best_params.path)
    shutil.copyfile(out / tune_report.TRIALS_MD, trial_table.path)
    shutil.copyfile(out / tune_report.REPORT, report.path)
    best_params.metadata.update(searched=result.searched, params=result.best_params)
    log_to_kfp(result, metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(
    dataset: Input[Dataset],
    params: Input[Artifact],
    epochs: int,
    train_seed: int,
    mlflow_tracking_uri: str,
    model: Output[Model],
    metrics: Output[Metrics],
) -> str:
    """Train with Lightning on the tuned params, export ONNX; returns the MLflow run id."""
    from pathlib import Path

    from digitops.config import load_config
    from digitops.contracts import BestParams
    from digitops.pipeline.parameters import config_values
    from digitops.results import log_to_kfp
    from digitops.stages import train as stage

    values = config_values(
        epochs=epochs, train_seed=train_seed, mlflow_tracking_uri=mlflow_tracking_uri
    ) | {"train.progress": False}
    tuned = BestParams.read(Path(params.path)).params
    result = stage.run(load_config(values=values), Path(dataset.path), Path(model.path), tuned)
    model.metadata.update(
        framework="onnx", parameters=result.parameters, mlflow_run_id=result.mlflow_run_id or ""
    )
    log_to_kfp(result, metrics)
    return result.mlflow_run_id or ""


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    dataset: Input[Dataset],
    model: Input[Model],
    mlflow_tracking_uri: str,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    report: Output[HTML],
) -> None:
    """Score the ONNX model on the test split (the register task's gate judges it)."""
    import shutil
    from pathlib import Path

    from digitops.config import load_config
    from digitops.contracts import Evaluation
    from digitops.pipeline.parameters import config_values
    from digitops.results import log_to_kfp, write_artifact_file
    from digitops.stages import evaluate as stage

    out = Path(evaluation.path)
    config = load_config(values=config_values(mlflow_tracking_uri=mlflow_tracking_uri))
    result = stage.run(config, Path(model.path), Path(dataset.path), out)
    log_to_kfp(result, metrics)
    found = Evaluation.read(out)
    confusion.log_confusion_matrix(list(found.per_class), found.confusion_matrix)
    write_artifact_file(confusion.path, confusion.metadata)
    shutil.copyfile(out / stage.REPORT, report.path)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def explain(
    dataset: Input[Dataset],
    model: Input[Model],
    mlflow_tracking_uri: str,
    metrics: Output[Metrics],
    report: Output[HTML],
    explanation: Output[Artifact],
) -> None:
    """Captum attributions of test digits and their faithfulness (deletion curves); the
    `explanation` directory (figures, metrics) goes on to the model card."""
    import shutil
    import tempfile
    from pathlib import Path

    from digitops.config import load_config
    from digitops.pipeline.parameters import config_values
    from digitops.results import log_to_kfp
    from digitops.stages import explain as stage

    out = Path(tempfile.mkdtemp()) / "explanation"
    config = load_config(values=config_values(mlflow_tracking_uri=mlflow_tracking_uri))
    result = stage.run(config, Path(model.path), Path(dataset.path), out)
    log_to_kfp(result, metrics)
    shutil.copyfile(out / stage.REPORT, report.path)
    shutil.copytree(out, explanation.path)


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
    from digitops.pipeline.parameters import config_values
    from digitops.results import log_to_kfp
    from digitops.stages import drift as stage

    out = Path(tempfile.mkdtemp()) / "drift"
    config = load_config(values=config_values(mlflow_tracking_uri=mlflow_tracking_uri))
    result = stage.run(config, Path(dataset.path), current_data or None, out, Path(model.path))
    shutil.copyfile(out / stage.VERDICT, verdict.path)
    shutil.copyfile(out / stage.REPORT, report.path)
    verdict.metadata.update(drifted=result.drifted, drifted_columns=result.drifted_columns)
    log_to_kfp(result, metrics)
    return result.drifted


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register(
    model: Input[Model],
    evaluation: Input[Artifact],
    drift_verdict: Input[Artifact],
    explanation: Input[Artifact],
    model_name: str,
    accuracy_threshold: float,
    regression_tolerance: float,
    drift_blocks_promotion: bool,
    quality_rules: bool,
    approval: str,
    pipeline_run: str,
    trigger: str,
    mlflow_tracking_uri: str,
    registered: Output[Artifact],
    model_card: Output[HTML],
    model_card_markdown: Output[Markdown],
) -> bool:
    """Register the model in MLflow and gate it (accuracy, regression, drift, and the quality
    rules: per-class recall, confusion pairs, calibration, behavioral tests); write its model
    card; returns whether it went to production (passed, with approval 'auto'); a version that
    passed with approval 'manual' is the `candidate`, waiting for `digitops promote`."""
    import shutil
    import tempfile
    from pathlib import Path

    from digitops.config import load_config
    from digitops.pipeline.parameters import config_values
    from digitops.stages import register as stage

    values = config_values(
        model_name=model_name,
        accuracy_threshold=accuracy_threshold,
        regression_tolerance=regression_tolerance,
        drift_blocks_promotion=drift_blocks_promotion,
        quality_rules=quality_rules,
        approval=approval,
        mlflow_tracking_uri=mlflow_tracking_uri,
    )
    card_dir = Path(tempfile.mkdtemp()) / "model-card"
    result = stage.run(
        load_config(values=values),
        Path(model.path),
        Path(evaluation.path),
        Path(drift_verdict.path),
        pipeline_run,
        trigger,
        Path(explanation.path),
        card_dir,
        reuse_version=True,  # a rerun of a run that stopped after registering: no second one
    )
    shutil.copyfile(card_dir / "model_card.html", model_card.path)
    shutil.copyfile(card_dir / "model_card.md", model_card_markdown.path)
    registration = result.registration()
    registration.write(Path(registered.path))
    found = {k: v for k, v in result.__dict__.items() if k != "card_dir"}  # the task's own dir
    registered.metadata.update(found, model_uri=registration.model_uri)
    return result.in_production


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy(
    dataset: Input[Dataset],
    registered: Input[Artifact],
    deploy_target: str,
    smoke_min_accuracy: float,
    mlflow_tracking_uri: str,
    deployment: Output[Artifact],
    metrics: Output[Metrics],
) -> str:
    """Serve the registry's `production` version (local service or Kubernetes), which the
    service follows as promote and rollback move it; smoke-test it over HTTP; returns the
    endpoint. A local deployment is recorded in ./artifacts/deployment as well."""
    import shutil
    from pathlib import Path

    from digitops.config import load_config
    from digitops.contracts import Registration
    from digitops.pipeline.parameters import config_values
    from digitops.results import log_to_kfp
    from digitops.stages import deploy as stage

    values = config_values(
        deploy_target=deploy_target,
        smoke_min_accuracy=smoke_min_accuracy,
        mlflow_tracking_uri=mlflow_tracking_uri,
    )
    model_uri = Registration.read(Path(registered.path)).production_uri
    state = Path("artifacts") / "deployment"
    result = stage.run(load_config(values=values), model_uri, Path(dataset.path), state)
    shutil.copyfile(state / stage.RECORD, deployment.path)
    deployment.metadata.update(endpoint=result.endpoint, model=model_uri)
    log_to_kfp(result, metrics)
    return result.endpoint


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def batch_predict(
    model_uri: str,
    source: str,
    mlflow_tracking_uri: str,
    answers: Output[Dataset],
) -> int:
    """Batch inference: score a folder or s3://bucket/prefix of images (`source`) with a model
    directory or registry URI (empty: production, else the candidate) into a Parquet file, one
    row per image (`digitops.serving.batch`); returns the number of images scored."""
    from pathlib import Path

    from digitops.config import load_config
    from digitops.pipeline.batch import batch_predict as run
    from digitops.pipeline.parameters import config_values
    from digitops.tracking import tracking_uri

    config = load_config(values=config_values(mlflow_tracking_uri=mlflow_tracking_uri))
    done = run(model_uri, source, Path(answers.path), tracking_uri(config.tracking))
    answers.metadata.update(done.__dict__, format="parquet", source=source)
    return done.images
