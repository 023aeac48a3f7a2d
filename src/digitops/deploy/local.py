"""Deploy target `local`: `digitops serve` as a detached process on this machine.

`start` launches it and waits for `/ready`; `stop` ends it (and its workers), and only it: a
process is named by its pid and its start time, so a reused pid is never taken for it.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

from digitops.config import Config
from digitops.deploy import DeployError
from digitops.net import NotReady, free_port, wait_for_url

# How long `stop` lets the service shut down gracefully (uvicorn drains its connections).
STOP_GRACE_S = 10.0
# psutil's create_time is boot time + start ticks; boot time is derived from the wall clock and
# moves when the clock is adjusted, so two readings of one process may differ slightly.
SAME_START_S = 1.0


@dataclass(frozen=True)
class Service:
    """One process `start` launched: its pid and start time (psutil's `create_time`)."""

    pid: int
    create_time: float


def start(config: Config, model: str, log_file: Path) -> tuple[str, Service]:
    """Start `digitops serve` for `model`, detached; return its endpoint once `/ready` answers."""
    from digitops.tracking import tracking_uri

    cfg = config.deploy
    port = cfg.port or free_port(cfg.host)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as stream:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "digitops.cli", "serve", "--model", model),
                *("--host", cfg.host, "--port", str(port)),
                *(
                    "--store",
                    cfg.store
                    if "://" in cfg.store or not cfg.store
                    else str(Path(cfg.store).resolve()),
                ),
            ],
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # keeps serving after this stage (and its task) ends
            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(config.tracking)},
        )
    service = Service(process.pid, psutil.Process(process.pid).create_time())
    endpoint = f"http://{cfg.host}:{port}"
    try:
        wait_for_url(
            f"{endpoint}/ready", cfg.startup_timeout_s, alive=lambda: process.poll() is None
        )
    except NotReady as exc:
        stop(service)
        raise DeployError(
            f"the service did not become ready ({exc}); its log: {log_file}"
        ) from None
    return endpoint, service


def stop(service: Service) -> bool:
    """End `service` and its child processes if it still runs; False if it is gone or another
    process holds its pid now (reused, or a pid recorded in another PID namespace)."""
    try:
        process = psutil.Process(service.pid)
        if not math.isclose(process.create_time(), service.create_time, abs_tol=SAME_START_S):
            return False
        family = [process, *process.children(recursive=True)]
    except psutil.Error:  # no such process, or not ours to inspect
        return False
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.terminate()
    _, alive = psutil.wait_procs(family, timeout=STOP_GRACE_S)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    return True
