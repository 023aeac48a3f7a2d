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
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data: DataOpt = ARTIFACTS / "dataset",
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs.")] = None,
    out: Annotated[Path, typer.Option(help="Model directory to write.")] = ARTIFACTS / "model",
) -> None:
    """Train the CNN with PyTorch Lightning; export ONNX; track the run in MLflow."""
    from digitops.stages import train as stage

    cfg = _config(config, set_, **{"train.epochs": epochs})
    result = stage.run(cfg, data, out)
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
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    pipeline_file: Annotated[Path, typer.Option("--pipeline", help="Compiled pipeline YAML.")] = (
        Path("pipelines") / "digits.yaml"
    ),
    root: Annotated[Path, typer.Option(help="Local pipeline root.")] = ARTIFACTS / "pipeline-root",
) -> None:
    """Run the compiled pipeline here with the KFP local runner; summarise every task."""
    from digitops.pipeline.runner import run_local

    arguments = _pipeline_arguments(params, source=source, limit=limit, epochs=epochs)
    run_dir, tasks = run_local(pipeline_file, arguments, root.resolve())
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
