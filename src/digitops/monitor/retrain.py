"""Starting a retrain: the compiled pipeline on MNIST plus the store's labeled requests.

Here it runs with the KFP local runner (and the monitor waits for it); with a KFP host it is a
run on Kubeflow Pipelines (and the monitor does not wait). Either way, the monitor's reasons go
in as the `trigger` parameter and end on the registered version's `trigger` tag, and the run
registers with approval `manual`: the new version becomes the `candidate`, the challenger, and
earns production through its rollout, not through the run.

One retrain at a time: on a machine, an exclusive file lock held for the whole local run (two
monitors started at once: one runs, the other records that a run is running); on KFP, a run
of the pipeline still pending or running stops a new one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from digitops.config import Config
from digitops.errors import DigitopsError
from digitops.tracking import tracking_uri

log = logging.getLogger(__name__)

ACTIVE_STATES = {"PENDING", "RUNNING", "CANCELING", "PAUSED"}


class RetrainBusy(DigitopsError):
    """Another retrain run is running."""


@dataclass(frozen=True)
class Retrain:
    """A retrain that started: where, and how it ended (local) or its run id (KFP)."""

    where: str  # the local run directory, or the KFP run id
    state: str  # SUCCEEDED (local), or the state KFP reported
    registered: str  # what the register task said, when known


@contextmanager
def one_at_a_time(lock_file: Path) -> Iterator[None]:
    """Hold the machine's retrain lock, or raise `RetrainBusy` at once."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RetrainBusy(f"a retrain run is already running (lock {lock_file})") from None
    try:
        yield
    finally:
        lock.release()


def arguments(config: Config, store: str, reasons: list[str]) -> dict[str, Any]:
    """The pipeline arguments of a retrain: the registry's gate as configured, the monitor's
    `retrain` parameters, the store as the data source, approval manual, and the reasons as the
    trigger."""
    gate = config.registry
    return {
        "accuracy_threshold": gate.accuracy_threshold,
        "regression_tolerance": gate.regression_tolerance,
        "drift_blocks_promotion": gate.drift_blocks,
        "quality_rules": gate.quality_rules,
        **config.monitor.retrain,
        "source": store,
        "approval": "manual",
        "model_name": config.registry.model_name,
        "mlflow_tracking_uri": tracking_uri(config.tracking),
        "trigger": json.dumps({"by": "digitops monitor", "reasons": reasons}),
    }


def start(
    config: Config, store: str, reasons: list[str], pipeline_file: Path, root: Path
) -> Retrain:
    """Run the retrain (local runner, waits) or submit it (`monitor.kfp_host`, returns)."""
    args = arguments(config, store, reasons)
    host = config.monitor.kfp_host
    if host:
        _check_idle(host)
        from digitops.pipeline.runner import submit

        # No cached task: prepare's arguments name the store, whose images have changed since.
        run_id, state = submit(
            host, pipeline_file, args, "digitops-retrain", False, 0, no_cache=True
        )
        return Retrain(run_id, state, "")
    from digitops.pipeline.runner import run_local

    run_dir, tasks = run_local(pipeline_file, args, root)
    register = next((t for t in tasks if t.name == "register"), None)
    found = register.metadata.get("registered", {}) if register is not None else {}
    summary = ""
    if found:
        verdict = "passed" if found.get("gate_passed") else "failed"
        refused = "; ".join(found.get("gate_reasons") or [])
        summary = f"version {found.get('version')}: gate {verdict}"
        summary += f" ({refused})" if refused else ""
    return Retrain(str(run_dir), "SUCCEEDED", summary)


def _check_idle(host: str) -> None:
    """`RetrainBusy` when a run of the pipeline is pending or running on `host`."""
    from digitops.pipeline.runner import PipelineError, kfp_client, short_error

    try:
        runs = kfp_client(host).list_runs(page_size=50, sort_by="created_at desc").runs
    except Exception as exc:  # kfp raises transport and API errors of many types
        raise PipelineError(f"{host}: {short_error(exc)}") from None
    for run in runs or []:
        if str(run.state).split(".")[-1].upper() in ACTIVE_STATES and str(
            run.display_name
        ).startswith("digitops-"):
            raise RetrainBusy(f"{host}: run {run.run_id} ({run.display_name}) is {run.state}")
