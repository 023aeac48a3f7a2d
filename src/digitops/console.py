"""What every command line face shares: options, config loading, errors as one line, summaries.

Used by `digitops.cli` and `digitops.pipeline.cli`.
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
from digitops.errors import DigitopsError, tracking_unreachable
from digitops.results import StageResult

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
    """Turn `DigitopsError`, and an MLflow server that does not answer, into one line on stderr
    and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _setup_logging()
        try:
            return command(*args, **kwargs)
        except DigitopsError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except Exception as exc:  # MlflowException, without importing mlflow for every command
            if (unreachable := tracking_unreachable(str(exc))) is None:
                raise
            typer.echo(f"error: {unreachable}", err=True)
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


def make_config(path: Path | None, overrides: list[str] | None, **options: Any) -> Config:
    """The config from a file and `--set` overrides; a command's own options (by dotted key,
    None = not given) win over both."""
    values = {key: value for key, value in options.items() if value is not None}
    return load_config(path, overrides, values)


def show(result: StageResult) -> None:
    """Print a stage's summary."""
    typer.echo("\n".join(result.lines()))


def model_or_default(model: str | None) -> str:
    """`model`, else what the last run produced: the registry's production version, else its
    candidate (followed as an alias), else artifacts/model; says which on stderr."""
    if model:
        return model
    import os

    from digitops import registry
    from digitops.tracking import tracking_uri

    config = Config()
    found = registry.default_model(config.registry, config.tracking)
    if found is not None:
        source, version = found
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri(config.tracking)  # for workers too
        typer.echo(f"using {source} (version {version})", err=True)
        return source
    if (ARTIFACTS / "model" / "model.onnx").is_file():
        typer.echo(f"using {ARTIFACTS / 'model'} (no registered model)", err=True)
        return str(ARTIFACTS / "model")
    raise DigitopsError(
        "no model: the registry has no production or candidate version and artifacts/model "
        "holds none; run `make run` (or `digitops train`), or pass --model"
    )
