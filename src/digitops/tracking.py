"""MLflow tracking: where runs go and how a stage opens one.

Default backend: a SQLite file under the working directory (`mlflow ui --backend-store-uri
sqlite:///mlflow.db` shows the runs); `MLFLOW_TRACKING_URI` or `tracking.uri` overrides it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from digitops.config import TrackingConfig
from digitops.results import StageResult, log_to_mlflow

if TYPE_CHECKING:
    import mlflow

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"


def tracking_uri(cfg: TrackingConfig) -> str:
    """The tracking URI in force: config, then $MLFLOW_TRACKING_URI, then ./mlflow.db."""
    return (
        cfg.uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"
    )


def quiet_mlflow() -> None:
    # Alembic prints every schema migration when a new SQLite store is created, and MLflow
    # announces each experiment it creates.
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def start_run(
    cfg: TrackingConfig, run_name: str, run_id: str | None = None
) -> Iterator[mlflow.ActiveRun]:
    """Open (or resume, with `run_id`) an MLflow run in the configured experiment."""
    import mlflow

    quiet_mlflow()
    mlflow.set_tracking_uri(tracking_uri(cfg))
    if run_id is None:
        mlflow.set_experiment(cfg.experiment)
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name) as run:
        yield run


def add_to_run(
    cfg: TrackingConfig, run_id: str, stage: str, result: StageResult, artifacts: Path
) -> None:
    """Add a later stage's metrics and output directory (under `stage/`) to an existing run."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        with start_run(cfg, run_name=stage, run_id=run_id):
            log_to_mlflow(result)
            mlflow.log_artifacts(str(artifacts), artifact_path=stage)
    except MlflowException as exc:
        # The model may come from another tracking store; the outputs on disk are complete.
        log.warning("could not add the %s results to MLflow run %s: %s", stage, run_id, exc.message)
