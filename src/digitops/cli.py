"""The `digitops` command: one sub-command per stage.

Each command parses options, loads the config, calls the stage's `run`, and prints its summary.
User errors (`DigitopsError`) become one line on stderr and exit code 2. Heavy libraries are
imported inside the commands so `digitops --help` stays fast.
"""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from digitops.config import Config, load_config
from digitops.errors import DigitopsError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="digitops: handwritten-digit recognition, from data to deployed model.",
)

F = TypeVar("F", bound=Callable[..., Any])
ARTIFACTS = Path("artifacts")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override one value, e.g. --set train.epochs=3 (repeatable)."),
]
DataOpt = Annotated[Path, typer.Option("--data", help="Dataset directory (from prepare).")]
ModelOpt = Annotated[Path, typer.Option("--model", help="Model directory (from train).")]


def user_errors(command: F) -> F:
    """Turn `DigitopsError` into one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _setup_logging()
        try:
            return command(*args, **kwargs)
        except DigitopsError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("digitops").setLevel(logging.INFO)
    # Lightning announces hardware and tips at INFO; keep its warnings only. (Lightning resets
    # the level of its top logger on import, so set it on the loggers that emit.)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Deprecations inside third-party libraries that users cannot act on.
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(torch|lightning)\.")


def _config(config: Path | None, overrides: list[str] | None, **extra: Any) -> Config:
    sets = list(overrides or []) + [
        f"{key}={value}" for key, value in extra.items() if value is not None
    ]
    return load_config(config, sets)


def _print(title: str, fields: dict[str, Any]) -> None:
    typer.echo(title)
    for key, value in fields.items():
        typer.echo(f"  {key}: {value}")


@app.command()
@user_errors
def prepare(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    source: Annotated[
        str | None,
        typer.Option(
            help="'mnist' (bundled), an IDX directory, an image folder root/<label>/*.png, "
            "or a CSV with a label column and 784 pixel columns."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use at most N images per split pool.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the split.")] = None,
    out: Annotated[Path, typer.Option(help="Dataset directory to write.")] = ARTIFACTS / "dataset",
) -> None:
    """Build a versioned dataset directory (train/val/test, augmentation, stats, manifest)."""
    from digitops.stages import prepare as stage

    cfg = _config(
        config, set_, **{"prepare.source": source, "prepare.limit": limit, "prepare.seed": seed}
    )
    result = stage.run(cfg, out)
    _print(
        "prepared dataset",
        {
            "dir": result.dataset_dir,
            "version": result.version,
            "sizes": result.sizes,
            "classes": len(result.class_names),
        },
    )


@app.command()
@user_errors
def tune(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data: DataOpt = ARTIFACTS / "dataset",
    trials: Annotated[int | None, typer.Option(help="Number of trials (0 = no search).")] = None,
    time_budget: Annotated[
        float | None, typer.Option(help="Wall-clock budget of the search, seconds.")
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(help="Ray cluster to run on, e.g. ray://head:10001 (default: $RAY_ADDRESS)."),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Directory for best_params.json and the trial table.")
    ] = (ARTIFACTS / "tune"),
) -> None:
    """Search hyper-parameters with Ray Tune (Optuna TPE + ASHA); write best_params.json."""
    from digitops.stages import tune as stage

    cfg = _config(
        config,
        set_,
        **{
            "tune.trials": trials,
            "tune.time_budget_s": time_budget,
            "tune.ray_address": ray_address,
        },
    )
    result = stage.run(cfg, data, out)
    baseline = result.baseline_val_accuracy
    _print(
        "hyper-parameter search" if result.searched else "no search (0 trials)",
        {
            "dir": result.out_dir,
            "best_val_accuracy": _fmt(result.best_val_accuracy),
            "baseline_val_accuracy": _fmt(baseline),
            "trials": f"{result.trials} ({result.failed} failed)",
            "minutes": f"{result.seconds / 60:.1f}",
            "best_params": result.best_params or "the configured values",
            "mlflow_run_id": result.mlflow_run_id,
        },
    )


@app.command()
@user_errors
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data: DataOpt = ARTIFACTS / "dataset",
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs.")] = None,
    params: Annotated[
        Path | None,
        typer.Option(help="best_params.json from `digitops tune` (or its directory)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Model directory to write.")] = ARTIFACTS / "model",
) -> None:
    """Train the CNN with PyTorch Lightning; export ONNX; track the run in MLflow."""
    from digitops.stages import train as stage
    from digitops.stages.tune import load_best_params

    cfg = _config(config, set_, **{"train.epochs": epochs})
    result = stage.run(cfg, data, out, load_best_params(params) if params else None)
    _print(
        "trained model",
        {
            "dir": result.model_dir,
            "val_accuracy": f"{result.val_accuracy:.4f}",
            "parameters": result.parameters,
            "epochs": result.epochs,
            "minutes": f"{result.seconds / 60:.1f}",
            "mlflow_run_id": result.mlflow_run_id,
        },
    )


@app.command()
@user_errors
def evaluate(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: ModelOpt = ARTIFACTS / "model",
    data: DataOpt = ARTIFACTS / "dataset",
    out: Annotated[Path, typer.Option(help="Report directory to write.")] = (
        ARTIFACTS / "evaluation"
    ),
) -> None:
    """Score the ONNX model on the test split: metrics.json, confusion matrix, error grid."""
    from digitops.stages import evaluate as stage

    cfg = _config(config, set_)
    result = stage.run(cfg, model, data, out)
    _print(
        "evaluated model",
        {
            "dir": result.report_dir,
            "accuracy": f"{result.accuracy:.4f}",
            "macro_f1": f"{result.macro_f1:.4f}",
            "misclassified": f"{result.misclassified} of {result.test_images}",
        },
    )


@app.command()
@user_errors
def explain(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: ModelOpt = ARTIFACTS / "model",
    data: DataOpt = ARTIFACTS / "dataset",
    out: Annotated[Path, typer.Option(help="Report directory to write.")] = (
        ARTIFACTS / "explanation"
    ),
) -> None:
    """Captum attributions (IG, Saliency, Occlusion) and their faithfulness (deletion curves)."""
    from digitops.stages import explain as stage

    result = stage.run(_config(config, set_), model, data, out)
    _print(
        "explained model",
        {
            "dir": result.out_dir,
            "deletion AUC / random (lower = more faithful)": ", ".join(
                f"{name} {ratio:.2f}" for name, ratio in result.auc_ratio.items()
            ),
            "confidence drop at 10 % removed": ", ".join(
                f"{name} {drop:.3f}" for name, drop in result.drop_at_10.items()
            )
            + f", random {result.random_drop_at_10:.3f}",
            "images": result.images,
            "seconds": f"{result.seconds:.0f}",
        },
    )


@app.command()
@user_errors
def drift(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    reference: Annotated[
        Path, typer.Option(help="Dataset directory whose training data is the reference.")
    ] = ARTIFACTS / "dataset",
    current: Annotated[
        str | None,
        typer.Option(
            help="A dataset directory (its test split), a folder of images, or the service's "
            "request log (.jsonl). Default: the reference dataset's test split."
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="Model directory: adds predicted-class and confidence drift."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Report directory to write.")] = ARTIFACTS / "drift",
) -> None:
    """Evidently data drift of image descriptors between the training data and current data."""
    from digitops.stages import drift as stage

    result = stage.run(_config(config, set_), reference, current, out, model)
    _print(
        "drift detected" if result.drifted else "no drift",
        {
            "dir": result.out_dir,
            "drifted_share": f"{result.drifted_share:.2f}",
            "drifted_columns": ", ".join(result.drifted_columns) or "none",
            "images": f"{result.current_images} current vs {result.reference_images} reference",
            "seconds": f"{result.seconds:.0f}",
        },
    )


@app.command()
@user_errors
def register(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: ModelOpt = ARTIFACTS / "model",
    evaluation: Annotated[
        Path, typer.Option(help="Evaluation directory (from evaluate).")
    ] = ARTIFACTS / "evaluation",
    drift: Annotated[
        Path | None, typer.Option(help="drift.json from `digitops drift` (its verdict can block).")
    ] = None,
    approval: Annotated[
        str | None, typer.Option(help="manual (default): promote by hand; auto: on a pass.")
    ] = None,
) -> None:
    """Register the model in MLflow, gate it, alias it `candidate` (and `production` if auto)."""
    from digitops.registry import PRODUCTION
    from digitops.stages import register as stage

    cfg = _config(config, set_, **{"registry.approval": approval})
    drift_file = drift / "drift.json" if drift is not None and drift.is_dir() else drift
    result = stage.run(cfg, model, evaluation, drift_file)
    _print(
        f"registered {result.model_name} version {result.version}",
        {
            "gate": "passed" if result.gate.passed else "failed: " + "; ".join(result.gate.reasons),
            "aliases": ", ".join(result.aliases) or "none",
            "production": result.production or "none",
            "next": (
                f"digitops promote --version {result.version}"
                if result.gate.passed and PRODUCTION not in result.aliases
                else "nothing to do"
            ),
        },
    )


@app.command()
@user_errors
def promote(
    version: Annotated[int, typer.Option(help="Model version to put in production.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Give the `production` alias to a version that passed the gate (after you looked at it)."""
    from digitops import registry

    cfg = _config(config, set_)
    promoted = registry.promote(cfg.registry, cfg.tracking, version)
    typer.echo(f"{cfg.registry.model_name} version {promoted.number} is in production")


@app.command()
@user_errors
def rollback(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Give `production` back to the version that held it before the current one."""
    from digitops import registry

    cfg = _config(config, set_)
    was, now = registry.rollback(cfg.registry, cfg.tracking)
    typer.echo(f"{cfg.registry.model_name}: production rolled back from version {was} to {now}")


@app.command()
@user_errors
def serve(
    model: Annotated[
        str,
        typer.Option(help="Model directory, models:/digit-classifier@production, or runs:/..."),
    ] = str(ARTIFACTS / "model"),
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Server processes.")] = 1,
    request_log: Annotated[
        Path | None, typer.Option(help="JSON-lines file recording every prediction.")
    ] = ARTIFACTS / "requests.jsonl",
) -> None:
    """Serve the model over HTTP (FastAPI + onnxruntime): /predict, the web page at /, ..."""
    import os

    import uvicorn

    from digitops.serving.app import create_app
    from digitops.serving.main import MODEL_ENV, REQUEST_LOG_ENV
    from digitops.serving.predictor import load_predictor

    predictor = load_predictor(model)  # fail here, with one line, before the server starts
    typer.echo(f"serving {predictor.name} version {predictor.version} on http://{host}:{port}")
    log = request_log.resolve() if request_log is not None else None
    options: dict[str, Any] = {"host": host, "port": port, "log_level": "warning"}
    if workers == 1:
        uvicorn.run(create_app(predictor, log), **options)
        return
    # Several workers are separate processes: each builds its app from the environment.
    os.environ[MODEL_ENV] = model
    if log is not None:
        os.environ[REQUEST_LOG_ENV] = str(log)
    uvicorn.run("digitops.serving.main:app_from_env", factory=True, workers=workers, **options)


@app.command()
@user_errors
def predict(
    images: Annotated[list[Path] | None, typer.Argument(help="Image files.")] = None,
    url: Annotated[
        str | None, typer.Option(help="A running service, e.g. http://127.0.0.1:8000.")
    ] = None,
    model: Annotated[str, typer.Option(help="Model to run locally (without --url).")] = str(
        ARTIFACTS / "model"
    ),
    camera: Annotated[
        int | None, typer.Option(help="Read frames from webcam N (OpenCV) instead of files.")
    ] = None,
    frames: Annotated[int, typer.Option(help="Frames to read with --camera.")] = 10,
) -> None:
    """Predict digits in image files (or webcam frames), locally or with a running service."""
    from digitops.serving.client import camera_frames, predict_files

    if camera is not None:
        inputs = camera_frames(camera, frames)
    elif images:
        inputs = [(str(path), _read_file(path)) for path in images]
    else:
        raise DigitopsError("give image files, or --camera N")
    for name, answer in predict_files(inputs, url=url, model=model):
        top3 = ", ".join(f"{t['digit']} {t['probability']:.2f}" for t in answer["top3"])
        typer.echo(f"{name}: {answer['digit']} ({answer['confidence']:.3f}; top 3: {top3})")


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DigitopsError(f"{path}: cannot read ({exc.strerror})") from None


@app.command()
@user_errors
def deploy(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: Annotated[
        str, typer.Option(help="Model directory or URI, e.g. models:/digit-classifier@production.")
    ] = "models:/digit-classifier@production",
    data: DataOpt = ARTIFACTS / "dataset",
    target: Annotated[str | None, typer.Option(help="local (default) or kubernetes.")] = None,
    out: Annotated[Path, typer.Option(help="Where the deployment is recorded.")] = (
        ARTIFACTS / "deployment"
    ),
    stop: Annotated[bool, typer.Option("--stop", help="Stop the local deployment.")] = False,
) -> None:
    """Serve a model version (local service or Kubernetes) and smoke-test it over HTTP."""
    from digitops.stages import deploy as stage

    if stop:
        endpoint = stage.stop(out)
        typer.echo(f"stopped {endpoint}" if endpoint else f"no deployment recorded in {out}")
        return
    result = stage.run(_config(config, set_, **{"deploy.target": target}), model, data, out)
    _print(
        "deployed",
        {
            "endpoint": result.endpoint,
            "model": f"{result.model} (version {result.model_version})",
            "smoke_accuracy": f"{result.smoke_accuracy:.3f} on {result.smoke_images} test digits",
            "stop": "digitops deploy --stop",
        },
    )


pipeline_app = typer.Typer(
    no_args_is_help=True, help="Compile, run locally, or submit the KFP pipeline."
)
app.add_typer(pipeline_app, name="pipeline")

ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="Pipeline parameter, e.g. --param epochs=3 (repeatable)."),
]


def _pipeline_arguments(params: list[str] | None, **named: Any) -> dict[str, Any]:
    import yaml

    arguments = {key: value for key, value in named.items() if value is not None}
    for item in params or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise DigitopsError(f"--param {item!r}: expected name=value, e.g. epochs=3")
        # YAML typing (3 -> int, 0.99 -> float); an empty value is the empty string.
        arguments[key.strip()] = yaml.safe_load(text) if text.strip() else ""
    return arguments


@pipeline_app.command("compile")
@user_errors
def pipeline_compile(
    out: Annotated[Path, typer.Option(help="Root under which pipelines/ and components/ go.")] = (
        Path(".")
    ),
) -> None:
    """Write pipelines/digits.yaml and one component spec per stage under components/."""
    from digitops.pipeline.runner import compile_all

    for path in compile_all(out / "pipelines", out / "components"):
        typer.echo(f"wrote {path}")


@pipeline_app.command("run")
@user_errors
def pipeline_run(
    params: ParamOpt = None,
    source: Annotated[str | None, typer.Option(help="Data source (see prepare).")] = None,
    limit: Annotated[int | None, typer.Option(help="Image limit (0 = all).")] = None,
    tune_trials: Annotated[
        int | None, typer.Option(help="Search trials (0 = the configured hyper-parameters).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    pipeline_file: Annotated[Path, typer.Option("--pipeline", help="Compiled pipeline YAML.")] = (
        Path("pipelines") / "digits.yaml"
    ),
    root: Annotated[Path, typer.Option(help="Local pipeline root.")] = ARTIFACTS / "pipeline-root",
    docker: Annotated[
        bool,
        typer.Option(
            help="Run each task in the component image (kfp DockerRunner; `make images` first)."
        ),
    ] = False,
) -> None:
    """Run the compiled pipeline here with the KFP local runner; summarise every task."""
    from digitops.pipeline.runner import run_local

    arguments = _pipeline_arguments(
        params, source=source, limit=limit, tune_trials=tune_trials, epochs=epochs
    )
    run_dir, tasks = run_local(pipeline_file, arguments, root.resolve(), docker=docker)
    typer.echo(f"pipeline run finished: {run_dir}")
    for task in tasks:
        typer.echo(f"  {task.name}")
        for key, value in task.outputs.items():
            typer.echo(f"    {key}: {value}")
        for name, uri in task.artifacts.items():
            details = ", ".join(
                f"{k}={_fmt(v)}" for k, v in task.metadata[name].items() if k != "confusionMatrix"
            )
            typer.echo(f"    {name}: {uri}" + (f"  ({details})" if details else ""))


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) and not value.is_integer() else str(value)


@pipeline_app.command("submit")
@user_errors
def pipeline_submit(
    host: Annotated[str, typer.Option(help="KFP API endpoint, e.g. http://localhost:8080.")],
    params: ParamOpt = None,
    experiment: Annotated[str, typer.Option(help="KFP experiment name.")] = "digitops",
    wait: Annotated[bool, typer.Option(help="Wait for the run to finish.")] = False,
    timeout: Annotated[int, typer.Option(help="Seconds to wait with --wait.")] = 3600,
    pipeline_file: Annotated[Path, typer.Option("--pipeline", help="Compiled pipeline YAML.")] = (
        Path("pipelines") / "digits.yaml"
    ),
) -> None:
    """Upload the pipeline (new version if it exists) and start a run on a KFP host."""
    from digitops.pipeline.runner import submit

    run_id, state = submit(
        host, pipeline_file, _pipeline_arguments(params), experiment, wait, timeout
    )
    typer.echo(f"run {run_id}: {state}")
    if wait and state.upper() not in ("SUCCEEDED", "RUNTIMESTATE.SUCCEEDED"):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
