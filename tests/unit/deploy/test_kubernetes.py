"""The kubernetes deploy target without a cluster: the documents it applies (the serving
kustomization as kustomize renders it, with image and model set) and its rollout rule."""

import shutil
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes.client import (
    V1Deployment,
    V1DeploymentCondition,
    V1DeploymentSpec,
    V1DeploymentStatus,
    V1LabelSelector,
    V1ObjectMeta,
    V1PodTemplateSpec,
)

from digitops.deploy import DeployError
from digitops.deploy.kubernetes import SERVING, render, rendered_file, rollout_status, with_model

SERVING_DIR = Path(__file__).resolve().parents[3] / "manifests" / "serving"
ENV = {"DIGITOPS_MODEL": "models:/digit-classifier/7", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}

kubectl = pytest.mark.skipif(not shutil.which("kubectl"), reason="kustomize comes with kubectl")


@kubectl
def test_the_serving_deployment_gets_the_image_and_model():
    rendered = render(SERVING_DIR)
    docs = with_model(rendered, "registry.example/serving:1.2", ENV)
    assert rendered == render(SERVING_DIR)  # the input is left as it was
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/serving:1.2"
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env == {
        **ENV,
        # the candidate as a 10 % canary while it is not production (docs/continuous-training.md)
        "DIGITOPS_CHALLENGER": "models:/digit-classifier@candidate",
        "DIGITOPS_ROLLOUT": "canary",
        "DIGITOPS_CANARY_SHARE": "0.1",
        "DIGITOPS_STORE": "s3://digitops-store/",
        "AWS_ENDPOINT_URL": "http://minio.mlflow.svc:9000",
        "AWS_DEFAULT_REGION": "us-east-1",
        **{  # the MinIO login of the request store
            key: {"secretKeyRef": {"name": "store-client", "key": key}}
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        },
        "PORT": "8000",
        "WORKERS": "1",
        **{  # the MLflow login, from the secret scripts/cluster-secrets.sh makes
            key: {"secretKeyRef": {"name": "mlflow-client", "key": key, "optional": True}}
            for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
        },
    }
    # kustomize's labels are there, the other documents untouched, and all still valid.
    assert deployment["metadata"]["labels"]["app.kubernetes.io/part-of"] == "digitops"
    assert [d for d in docs if d["kind"] != "Deployment"] == [
        d for d in rendered if d["kind"] != "Deployment"
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)


def test_without_kubectl_the_copy_rendered_at_build_time_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no kubectl
    directory = tmp_path / "serving"
    shutil.copytree(SERVING_DIR, directory)
    with pytest.raises(DeployError, match="install kubectl"):
        render(directory)

    deployment = yaml.safe_load((SERVING_DIR / "deployment.yaml").read_text())
    rendered_file(directory).write_text(yaml.safe_dump_all([deployment]))
    (doc,) = render(directory)
    assert (doc["kind"], doc["metadata"]["name"]) == ("Deployment", SERVING)


def test_manifests_without_the_serving_deployment_are_refused():
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVING}}
    with pytest.raises(DeployError, match="no Deployment"):
        with_model([service], "image", ENV)


def _deployment(generation=2, observed=2, replicas=2, updated=2, total=2, available=2, reason=None):
    conditions = [V1DeploymentCondition(type="Progressing", status="False", reason=reason)]
    return V1Deployment(
        metadata=V1ObjectMeta(name=SERVING, generation=generation),
        spec=V1DeploymentSpec(
            replicas=replicas, selector=V1LabelSelector(), template=V1PodTemplateSpec()
        ),
        status=V1DeploymentStatus(
            observed_generation=observed,
            replicas=total,
            updated_replicas=updated,
            available_replicas=available,
            conditions=conditions if reason else None,
        ),
    )


def test_rollout_is_complete_only_as_kubectl_rollout_status_says():
    assert rollout_status(_deployment())[0]
    assert rollout_status(_deployment(observed=1)) == (
        False,
        "waiting for the deployment spec update to be observed",
    )
    assert rollout_status(_deployment(updated=1, total=3, available=2)) == (
        False,
        "1 of 2 new replicas updated",
    )
    assert rollout_status(_deployment(total=3)) == (False, "1 old replicas pending termination")
    assert rollout_status(_deployment(available=1)) == (
        False,
        "1 of 2 updated replicas available",
    )
    with pytest.raises(DeployError, match="progress deadline"):
        rollout_status(_deployment(updated=1, reason="ProgressDeadlineExceeded"))
