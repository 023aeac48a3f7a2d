"""Stage `deploy`: put a model version behind an endpoint and smoke-test it over HTTP.

Target `local` starts `digitops serve` on this machine (detached, so it outlives the stage),
waits for `/ready`, posts test digits as PNG files and records the endpoint and the smoke-test
accuracy in `deployment.json`; a service that answers worse than `deploy.min_accuracy` is
stopped and the stage fails. Target `kubernetes` server-side applies `manifests/serving/` with the
image and model URI through the Kubernetes API and waits for the rollout.
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
from typing import Any

import numpy as np

from digitops.config import Config
from digitops.data.dataset import load_dataset
from digitops.errors import DigitopsError
from digitops.fileio import atomic_dir, read_json, write_json

log = logging.getLogger(__name__)

RECORD = "deployment.json"
SERVING = "digitops-serving"  # the Deployment and Service in manifests/serving


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
        process = _identity(pid) if pid is not None else None
        write_json(
            tmp / RECORD,
            result.__dict__ | {"target": cfg.target, "pid": pid, "process": process},
        )
    return result


def stop(out_dir: Path) -> str | None:
    """Stop the local deployment recorded in `out_dir`; returns its endpoint (None: none)."""
    if not (out_dir / RECORD).is_file():
        return None
    record = read_json(out_dir / RECORD)
    pid = record.get("pid")
    # Only the process that was started: not a later one that reused its pid, nor one in another
    # PID namespace (a deploy task that ran in a container, whose service ended with it).
    if pid and record.get("process") == _identity(int(pid)):
        _stop(int(pid))
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
    """Server-side apply the serving manifests with this image and model; wait for the rollout.

    Uses the Kubernetes API directly (in a pod: its service account; elsewhere: ~/.kube/config),
    so the pipeline's deploy task needs no kubectl.
    """
    from kubernetes import client
    from kubernetes import config as kube_config
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import DynamicApiError

    cfg = config.deploy
    docs = render_manifests(_manifest_dir(cfg.manifests))
    for doc in docs:
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == SERVING:
            _set_container(
                doc, cfg.image, {"DIGITOPS_MODEL": model, "MLFLOW_TRACKING_URI": _tracking(config)}
            )
    try:
        try:
            kube_config.load_incluster_config()
        except kube_config.ConfigException:
            kube_config.load_kube_config()
        api = DynamicClient(client.ApiClient())
        for doc in docs:
            resource = api.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            resource.server_side_apply(
                body=doc,
                name=doc["metadata"]["name"],
                namespace=cfg.namespace,
                field_manager="digitops",
                force_conflicts=True,
            )
        _wait_for_rollout(client.AppsV1Api(), cfg.namespace, cfg.startup_timeout_s)
    except (kube_config.ConfigException, DynamicApiError, client.ApiException) as exc:
        raise DeployError(f"kubernetes: {str(exc).strip().splitlines()[0]}") from None
    except OSError as exc:  # the API server cannot be reached
        raise DeployError(f"kubernetes: cannot reach the API server: {exc}") from None
    return cfg.endpoint or f"http://{SERVING}.{cfg.namespace}.svc:8000"


def render_manifests(directory: Path) -> list[dict]:
    """The resources of a plain kustomization (`resources` files plus `labels`), as kustomize
    renders it; anything else kustomize offers is refused rather than ignored."""
    import yaml

    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - {"apiVersion", "kind", "resources", "labels"}
    if unsupported:
        raise DeployError(f"{directory}: kustomization fields {sorted(unsupported)} unsupported")
    labels: dict[str, str] = {}
    for entry in kustomization.get("labels", []):
        if entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise DeployError(f"{directory}: only plain labels are supported")
        labels |= entry["pairs"]
    docs = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((directory / name).read_text()):
            if doc:
                doc["metadata"]["labels"] = {**doc["metadata"].get("labels", {}), **labels}
                docs.append(doc)
    return docs


def _manifest_dir(manifests: str) -> Path:
    """`deploy.manifests` from the working directory, else from the project (as in the image)."""
    path = Path(manifests)
    if not path.is_absolute() and not path.is_dir():
        path = Path(__file__).resolve().parents[3] / manifests
    if not (path / "kustomization.yaml").is_file():
        raise DeployError(f"{manifests}: no kustomization.yaml (deploy.manifests)")
    return path


def _set_container(deployment: dict, image: str, env: dict[str, str]) -> None:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container["image"] = image
    kept = [e for e in container.get("env", []) if e["name"] not in env]
    container["env"] = kept + [{"name": k, "value": v} for k, v in env.items()]


def _wait_for_rollout(apps: Any, namespace: str, timeout_s: float) -> None:
    """Like `kubectl rollout status`: every replica updated and available."""
    deadline = time.monotonic() + timeout_s
    while True:
        deployment = apps.read_namespaced_deployment(SERVING, namespace)
        spec, status = deployment.spec, deployment.status
        if (
            (status.observed_generation or 0) >= deployment.metadata.generation
            and (status.updated_replicas or 0) == spec.replicas
            and (status.available_replicas or 0) == spec.replicas
            and (status.replicas or 0) == spec.replicas
        ):
            return
        if time.monotonic() > deadline:
            raise DeployError(
                f"deployment/{SERVING} did not roll out in {timeout_s:.0f} s "
                f"({status.available_replicas or 0} of {spec.replicas} available)"
            )
        time.sleep(2)


def _tracking(config: Config) -> str:
    from digitops.tracking import tracking_uri

    return tracking_uri(config.tracking)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _identity(pid: int) -> str | None:
    """Which process `pid` is: its PID namespace and start time (None: no such process)."""
    if not Path("/proc/self/ns/pid").exists():
        return str(pid)  # no Linux /proc: the pid is all there is
    try:
        namespace = os.readlink("/proc/self/ns/pid")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    started = stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name
    return f"{namespace}:{started}"


def _stop(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
