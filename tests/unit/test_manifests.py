"""Every Kubernetes manifest validates against the Kubernetes schemas, offline
(kubernetes-validate); kustomizations render with kustomize; pinned releases stay pinned."""

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
KUBERNETES = "1.33.0"  # the version kind's default node image runs
LOCAL_KUSTOMIZATIONS = ("serving", "mlflow", "digitops")

kubectl = pytest.mark.skipif(not shutil.which("kubectl"), reason="kustomize comes with kubectl")


def kustomize(directory: Path) -> list[dict]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=True
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def validate(doc: dict) -> None:
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


@kubectl
@pytest.mark.parametrize("name", LOCAL_KUSTOMIZATIONS)
def test_kustomization_renders_and_every_resource_validates(name):
    directory = MANIFESTS / name
    docs = kustomize(directory)
    for doc in docs:
        validate(doc)
    # No manifest in the folder is left out of its kustomization.
    listed = set(yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"])
    assert {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"} == listed


def test_a_broken_manifest_fails_validation():
    deployment = yaml.safe_load((MANIFESTS / "serving" / "deployment.yaml").read_text())
    validate(deployment)  # valid as written, so each failure below is the one edit's
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    deployment["spec"]["replicas"] = 2
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):  # strict: unknown fields fail
        validate(deployment)


def test_raycluster_pod_templates_validate():
    """KubeRay's CRD schema is not available offline: its pod templates are core PodTemplates,
    validated as such, and the fields KubeRay requires are checked here."""
    cluster = yaml.safe_load((MANIFESTS / "ray" / "raycluster.yaml").read_text())
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    spec = cluster["spec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        assert isinstance(group["rayStartParams"], dict)
        template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "ray"}}
        validate({**template, "template": group["template"]})
    for worker in spec["workerGroupSpecs"]:
        assert worker["groupName"] and worker["minReplicas"] <= worker["maxReplicas"]
    import ray

    assert spec["rayVersion"] == ray.__version__  # the image's Ray, or the cluster cannot join


def test_kubeflow_pipelines_install_is_pinned_to_one_release():
    refs = set()
    for path in (MANIFESTS / "kubeflow-pipelines").rglob("kustomization.yaml"):
        for resource in yaml.safe_load(path.read_text())["resources"]:
            if resource.startswith("https://"):
                assert "github.com/kubeflow/pipelines/manifests/kustomize/" in resource
                ref = re.search(r"\?ref=(\d+\.\d+\.\d+)$", resource)
                assert ref, f"{path}: {resource} is not pinned to a release"
                refs.add(ref.group(1))
    assert len(refs) == 1


def test_kind_cluster_config():
    config = yaml.safe_load((MANIFESTS / "kind" / "cluster.yaml").read_text())
    assert (config["apiVersion"], config["kind"]) == ("kind.x-k8s.io/v1alpha4", "Cluster")
    roles = [node["role"] for node in config["nodes"]]
    assert roles.count("control-plane") == 1 and set(roles) <= {"control-plane", "worker"}


@kubectl
@pytest.mark.parametrize("name", LOCAL_KUSTOMIZATIONS)
def test_no_credentials_are_committed(name):
    """Secrets are made at set-up (scripts/cluster-secrets.sh), never rendered from the repo."""
    for doc in kustomize(MANIFESTS / name):
        assert doc["kind"] != "Secret", f"{name}: {doc['metadata']['name']}"
    text = "\n".join(p.read_text() for p in (MANIFESTS / name).glob("*.yaml"))
    assert "change-me" not in text and "stringData" not in text
