"""Stage `deploy`: put a model version behind an endpoint, smoke-test it over HTTP, record it.

The target (`deploy.target`) does the putting: `digitops.deploy.local` starts `digitops serve`
on this machine, `digitops.deploy.kubernetes` applies the serving manifests to a cluster. A
service that answers worse than `deploy.min_accuracy` is stopped (local) and the stage fails;
one that passes replaces the one recorded in `deployment.json`, which `stop` ends.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from digitops.config import Config
from digitops.data.dataset import load_dataset
from digitops.deploy import DeployError
from digitops.fileio import atomic_dir, read_json, write_json
from digitops.results import StageResult, metric

log = logging.getLogger(__name__)

RECORD = "deployment.json"

__all__ = ["RECORD", "DeployError", "DeployResult", "run", "stop"]


@dataclass(frozen=True)
class DeployResult(StageResult):
    """Where the model is served and how it did on the smoke test."""

    title = "deployed"
    endpoint: str
    model: str
    model_version: str
    smoke_accuracy: float = metric()
    smoke_images: int = metric()


def run(config: Config, model: str, data_dir: Path, out_dir: Path) -> DeployResult:
    """Deploy `model` (a directory or `models:/...` URI) to `deploy.target`; smoke-test it."""
    from digitops.deploy import kubernetes, local
    from digitops.deploy.smoke import smoke_test

    cfg = config.deploy
    test = load_dataset(data_dir).split("test")
    if model.startswith("models:/"):
        _check_registered(config, model)
    service = None
    if cfg.target == "kubernetes":
        endpoint = kubernetes.deploy(config, model)
    else:
        endpoint, service = local.start(config, model, out_dir.parent / f"{out_dir.name}.log")
    try:
        smoke = smoke_test(endpoint, test.images, test.labels, cfg.smoke_images)
        if smoke.accuracy < cfg.min_accuracy:
            raise DeployError(
                f"{endpoint}: smoke-test accuracy {smoke.accuracy:.3f} < {cfg.min_accuracy}"
                + ("; the service was stopped" if service else "")
            )
    except BaseException:
        if service is not None:
            local.stop(service)
        raise
    result = DeployResult(endpoint, model, smoke.model_version, smoke.accuracy, smoke.images)
    if (out_dir / RECORD).is_file():
        stop(out_dir)  # the new service passed its smoke test: retire the one it replaces
    with atomic_dir(out_dir, marker=RECORD) as tmp:
        process = asdict(service) if service is not None else None
        write_json(tmp / RECORD, asdict(result) | {"target": cfg.target, "process": process})
    return result


def _check_registered(config: Config, model: str) -> None:
    """Fail before anything starts when the registry does not answer or has no such version:
    a service that cannot load its model only says so in its own log."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    from digitops.errors import tracking_unreachable
    from digitops.registry import client

    mlflow_client = client(config.tracking)
    try:  # an alias is resolved by the server; a version number has to be looked up
        found = get_model_name_and_version(mlflow_client, model)
        if len(found) == 2:  # (name, version); a logged model's id (`models:/m-...`) is alone
            mlflow_client.get_model_version(*found)
    except MlflowException as exc:
        if tracking_unreachable(str(exc)):
            raise  # the caller names the server (the CLI, the pipeline runner)
        raise DeployError(f"{model}: not in the registry ({exc.message})") from None


def stop(out_dir: Path) -> str | None:
    """Stop the local deployment recorded in `out_dir`; returns its endpoint (None: none)."""
    if not (out_dir / RECORD).is_file():
        return None
    from digitops.deploy import local

    record = read_json(out_dir / RECORD)
    process = record.get("process")
    # Only the process that was started (pid and start time): not a later one that reused its
    # pid, nor one in another PID namespace (a deploy task that ran in a container).
    if isinstance(process, dict):
        local.stop(local.Service(int(process["pid"]), float(process["create_time"])))
    elif record.get("pid"):  # an older record (pid only): its process cannot be verified
        log.warning(
            "%s: recorded in an older format; if process %s still serves %s, stop it yourself",
            out_dir / RECORD,
            record["pid"],
            record["endpoint"],
        )
    return str(record["endpoint"])
