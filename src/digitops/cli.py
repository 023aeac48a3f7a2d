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


if __name__ == "__main__":
    app()
