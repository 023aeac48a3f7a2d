"""Stage `deploy`: put a model version behind an endpoint and smoke-test it over HTTP.

Target `local` starts `digitops serve` on this machine (detached, so it outlives the stage),
waits for `/ready`, posts test digits as PNG files and records the endpoint and the smoke-test
accuracy in `deployment.json`; a service that answers worse than `deploy.min_accuracy` is
stopped and the stage fails. Target `kubernetes` applies `manifests/serving/` with the image and
model URI, and waits for the rollout (needs `kubectl` and a cluster).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitops.config import Config
from digitops.data.dataset import load_dataset
from digitops.errors import DigitopsError
from digitops.fileio import atomic_dir, read_json, write_json

log = logging.getLogger(__name__)

RECORD = "deployment.json"


class DeployError(DigitopsError):
    """The service did not come up, or answered too badly to keep."""


@dataclass(frozen=True)
class DeployResult:
    """Where the model is served and how it did on the smoke test."""

    endpoint: str
    model: str
    model_version: str
    smoke_accuracy: float
    smoke_images: int


def run(config: Config, model: str, data_dir: Path, out_dir: Path) -> DeployResult:
    """Deploy `model` (a directory or `models:/...` URI) to `deploy.target`; smoke-test it."""
    cfg = config.deploy
    test = load_dataset(data_dir).split("test")
    if cfg.target == "kubernetes":
        endpoint = _kubernetes(config, model)
        pid = None
    else:
        endpoint, pid = _start_local(config, model, out_dir.parent / f"{out_dir.name}.log")
    try:
        accuracy, version = _smoke_test(endpoint, test.images, test.labels, cfg.smoke_images)
        if accuracy < cfg.min_accuracy:
            raise DeployError(
                f"{endpoint}: smoke-test accuracy {accuracy:.3f} < {cfg.min_accuracy}; "
                "the service was stopped"
            )
    except BaseException:
        if pid is not None:
            _stop(pid)
        raise
    result = DeployResult(endpoint, model, version, accuracy, min(cfg.smoke_images, len(test)))
    if (out_dir / RECORD).is_file():
        stop(out_dir)  # the new service passed its smoke test: retire the one it replaces
    with atomic_dir(out_dir, marker=RECORD) as tmp:
        write_json(tmp / RECORD, result.__dict__ | {"target": cfg.target, "pid": pid})
    return result


def stop(out_dir: Path) -> str | None:
    """Stop the local deployment recorded in `out_dir`; returns its endpoint (None: none)."""
    if not (out_dir / RECORD).is_file():
        return None
    record = read_json(out_dir / RECORD)
    if record.get("pid"):
        _stop(int(record["pid"]))
    return str(record["endpoint"])


def _start_local(config: Config, model: str, log_file: Path) -> tuple[str, int]:
    cfg = config.deploy
    port = cfg.port or _free_port(cfg.host)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as stream:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "digitops.cli", "serve", "--model", model),
                *("--host", cfg.host, "--port", str(port)),
                *("--request-log", str(Path(cfg.request_log).resolve())),
            ],
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # keeps serving after this stage (and its task) ends
            env={**os.environ, "MLFLOW_TRACKING_URI": _tracking(config)},
        )
    endpoint = f"http://{cfg.host}:{port}"
    deadline = time.monotonic() + cfg.startup_timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/ready", timeout=2):
                return endpoint, process.pid
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                _stop(process.pid)
                raise DeployError(
                    f"the service did not become ready at {endpoint}; its log: {log_file}"
                ) from None
            time.sleep(0.3)


def _smoke_test(
    endpoint: str, images: np.ndarray, labels: np.ndarray, count: int
) -> tuple[float, str]:
    """Post `count` test digits, as users send them (PNG, dark ink on white), over HTTP."""
    import httpx
    from PIL import Image

    right, version = 0, ""
    pick = np.random.default_rng(0).choice(len(labels), min(count, len(labels)), replace=False)
    with httpx.Client(base_url=endpoint, timeout=30) as client:
        for i in pick:
            buffer = io.BytesIO()
            Image.fromarray(255 - images[i]).resize((56, 56)).save(buffer, "PNG")
            response = client.post("/predict", files={"file": ("digit.png", buffer.getvalue())})
            if response.status_code != 200:
                raise DeployError(f"{endpoint}/predict answered {response.status_code}")
            answer = response.json()
            right += answer["digit"] == str(labels[i])
            version = answer["model_version"]
    return right / len(pick), version


def _kubernetes(config: Config, model: str) -> str:
    cfg = config.deploy
    namespace = ["--namespace", cfg.namespace]
    steps = [
        ["kubectl", "apply", "-k", cfg.manifests, *namespace],
        [
            "kubectl",
            "set",
            "image",
            "deployment/digitops-serving",
            f"serving={cfg.image}",
            *namespace,
        ],
        [
            *("kubectl", "set", "env", "deployment/digitops-serving"),
            *(f"DIGITOPS_MODEL={model}", f"MLFLOW_TRACKING_URI={_tracking(config)}", *namespace),
        ],
        [
            *("kubectl", "rollout", "status", "deployment/digitops-serving"),
            *(f"--timeout={int(cfg.startup_timeout_s)}s", *namespace),
        ],
    ]
    for step in steps:
        try:
            subprocess.run(step, check=True, capture_output=True, text=True, timeout=900)
        except FileNotFoundError:
            raise DeployError("kubectl is not installed; the kubernetes target needs it") from None
        except subprocess.CalledProcessError as exc:
            raise DeployError(f"{' '.join(step[:3])} failed: {exc.stderr.strip()}") from None
    return cfg.endpoint or f"http://digitops-serving.{cfg.namespace}.svc:8000"


def _tracking(config: Config) -> str:
    from digitops.tracking import tracking_uri

    return tracking_uri(config.tracking)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _stop(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
