"""Deploy target `kubernetes`: server-side apply the serving kustomization, rendered by kustomize
itself, with this image and model, through the Kubernetes API; wait for the rollout by a watch.

Rendering: `kubectl kustomize` where kubectl is installed; in the component image (a pipeline
pod has no kubectl) the copy that `scripts/images.sh` rendered beside the kustomization.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

from digitops.config import Config
from digitops.deploy import DeployError

SERVING = "digitops-serving"  # the Deployment and Service in manifests/serving
FIELD_MANAGER = "digitops"


def deploy(config: Config, model: str) -> str:
    """Apply the serving manifests for `model` to `deploy.namespace`; return the endpoint once
    the rollout is complete (in a pod: its service account; elsewhere: ~/.kube/config)."""
    from kubernetes import client
    from kubernetes import config as kube_config
    from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError
    from urllib3.exceptions import HTTPError

    from digitops.tracking import tracking_uri

    cfg = config.deploy
    env = {"DIGITOPS_MODEL": model, "MLFLOW_TRACKING_URI": tracking_uri(config.tracking)}
    docs = with_model(render(manifest_dir(cfg.manifests)), cfg.image, env)
    try:
        try:
            kube_config.load_incluster_config()
        except kube_config.ConfigException:
            kube_config.load_kube_config()
        api = client.ApiClient()
        apply(api, docs, cfg.namespace)
        wait_for_rollout(client.AppsV1Api(api), cfg.namespace, SERVING, cfg.startup_timeout_s)
    except (
        kube_config.ConfigException,
        DynamicApiError,
        ResourceNotFoundError,  # a kind the cluster does not serve
        client.ApiException,
    ) as exc:
        raise DeployError(f"kubernetes: {str(exc).strip().splitlines()[0]}") from None
    except (OSError, HTTPError) as exc:  # the API server cannot be reached
        raise DeployError(f"kubernetes: cannot reach the API server: {exc}") from None
    return cfg.endpoint or f"http://{SERVING}.{cfg.namespace}.svc:8000"


def manifest_dir(manifests: str) -> Path:
    """`deploy.manifests` from the working directory, else from the project (as in the image)."""
    path = Path(manifests)
    if not path.is_absolute() and not path.is_dir():
        path = Path(__file__).resolve().parents[3] / manifests
    if not (path / "kustomization.yaml").is_file():
        raise DeployError(f"{manifests}: no kustomization.yaml (deploy.manifests)")
    return path


def rendered_file(directory: Path) -> Path:
    """Where an image holds `directory` rendered at build time: `manifests/serving.yaml`."""
    return directory.with_name(f"{directory.name}.yaml")


def render(directory: Path) -> list[dict]:
    """The resources of the kustomization in `directory`, as kustomize renders them."""
    import yaml

    if shutil.which("kubectl"):
        done = subprocess.run(
            ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise DeployError(f"kubectl kustomize {directory}: {done.stderr.strip()}")
        text = done.stdout
    elif rendered_file(directory).is_file():
        text = rendered_file(directory).read_text()
    else:
        raise DeployError(
            f"{directory}: cannot render the kustomization: install kubectl (kustomize comes "
            f"with it), or provide {rendered_file(directory)} (`kubectl kustomize` output)"
        )
    docs = [doc for doc in yaml.safe_load_all(text) if doc]
    if not docs:
        raise DeployError(f"{directory}: the kustomization renders no resources")
    return docs


def with_model(docs: list[dict], image: str, env: dict[str, str]) -> list[dict]:
    """`docs` with the serving Deployment's container set to `image` and `env` (other variables
    kept); the input is left as it was."""
    docs = copy.deepcopy(docs)
    deployments = [d for d in docs if (d["kind"], d["metadata"]["name"]) == ("Deployment", SERVING)]
    if len(deployments) != 1:
        raise DeployError(f"the serving manifests hold no Deployment named {SERVING}")
    containers = deployments[0]["spec"]["template"]["spec"]["containers"]
    if len(containers) != 1:
        raise DeployError(f"deployment/{SERVING} should have one container, not {len(containers)}")
    (container,) = containers
    container["image"] = image
    kept = [e for e in container.get("env", []) if e["name"] not in env]
    container["env"] = kept + [{"name": k, "value": v} for k, v in env.items()]
    return docs


def apply(api_client: Any, docs: list[dict], namespace: str) -> None:
    """Server-side apply each document in `namespace`, taking over fields others set."""
    from kubernetes.dynamic import DynamicClient

    api = DynamicClient(api_client)
    for doc in docs:
        doc["metadata"]["namespace"] = namespace  # deploy.namespace wins over the manifests'
        resource = api.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        resource.server_side_apply(
            body=doc,
            name=doc["metadata"]["name"],
            namespace=namespace,
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )


def wait_for_rollout(apps: Any, namespace: str, name: str, timeout_s: float) -> None:
    """Watch deployment `name` until it has rolled out; `DeployError` after `timeout_s`."""
    from kubernetes import watch

    watcher = watch.Watch()
    progress = "no status seen"
    for event in watcher.stream(
        apps.list_namespaced_deployment,
        namespace,
        field_selector=f"metadata.name={name}",
        timeout_seconds=max(1, int(timeout_s)),  # the server ends the watch then
        _request_timeout=timeout_s + 30,  # and this ends it if the connection stalls
    ):
        if event["type"] == "DELETED":
            watcher.stop()
            raise DeployError(f"deployment/{name} was deleted during its rollout")
        done, progress = rollout_status(event["object"])
        if done:
            watcher.stop()
            return
    raise DeployError(f"deployment/{name} did not roll out in {timeout_s:.0f} s: {progress}")


def rollout_status(deployment: Any) -> tuple[bool, str]:
    """(rolled out?, what it waits for), by the rules of `kubectl rollout status`; a rollout past
    its progress deadline raises `DeployError`."""
    name, spec, status = deployment.metadata.name, deployment.spec, deployment.status
    if status is None or (deployment.metadata.generation or 0) > (status.observed_generation or 0):
        return False, "waiting for the deployment spec update to be observed"
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            raise DeployError(f"deployment/{name} exceeded its progress deadline")
    updated, replicas = status.updated_replicas or 0, status.replicas or 0
    available = status.available_replicas or 0
    if spec.replicas is not None and updated < spec.replicas:
        return False, f"{updated} of {spec.replicas} new replicas updated"
    if replicas > updated:
        return False, f"{replicas - updated} old replicas pending termination"
    if available < updated:
        return False, f"{available} of {updated} updated replicas available"
    return True, f"deployment/{name} successfully rolled out"
