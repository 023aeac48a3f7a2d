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
LOCAL_KUSTOMIZATIONS = ("serving", "mlflow", "digitops", "monitor")
# Custom resources only (the Prometheus Operator's): tests/unit/test_prometheus_rules.py
CRD_KUSTOMIZATIONS = ("monitoring",)

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
@pytest.mark.parametrize("name", LOCAL_KUSTOMIZATIONS + CRD_KUSTOMIZATIONS)
def test_no_credentials_are_committed(name):
    """Secrets are made at set-up (scripts/cluster-secrets.sh), never rendered from the repo."""
    for doc in kustomize(MANIFESTS / name):
        assert doc["kind"] != "Secret", f"{name}: {doc['metadata']['name']}"
    text = "\n".join(p.read_text() for p in (MANIFESTS / name).glob("*.yaml"))
    assert "change-me" not in text and "stringData" not in text


def pod_templates(docs: list[dict]) -> dict[str, dict]:
    """The pod template of each workload in `docs`, by the workload's name."""
    templates = {}
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            templates[doc["metadata"]["name"]] = doc["spec"]["template"]
        elif doc["kind"] == "CronJob":
            templates[doc["metadata"]["name"]] = doc["spec"]["jobTemplate"]["spec"]["template"]
    return templates


def environment(container: dict, docs: list[dict]) -> dict[str, str | None]:
    """A container's variables when every optional secret is missing, as the kubelet makes
    them: those of the ConfigMaps in `docs` its `envFrom` names, then its own `env` over them
    (None where a secret gives the value; a variable from a missing optional secret is skipped,
    so a ConfigMap's value of the same name stays)."""
    config_maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    names: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        names |= config_maps[source["configMapRef"]["name"]]
    for var in container.get("env", []):
        secret = var.get("valueFrom", {}).get("secretKeyRef", {})
        if not secret.get("optional"):
            names[var["name"]] = var.get("value")
    return names


def undefined_references(docs: list[dict]) -> set[str]:
    """`$(VAR)` in a container's command or args that the container does not define: Kubernetes
    passes those on as literal text."""
    missing = set()
    for template in pod_templates(docs).values():
        spec = template["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            words = " ".join(container.get("command", []) + container.get("args", []))
            defined = environment(container, docs)
            missing |= set(re.findall(r"\$\((\w+)\)", words)) - set(defined)
    return missing


@kubectl
def test_monitor_runs_the_component_image_every_15_minutes_one_pass_at_a_time():
    from digitops.pipeline.components import DEFAULT_IMAGE

    docs = kustomize(MANIFESTS / "monitor")
    cronjob = next(d for d in docs if d["kind"] == "CronJob")
    assert cronjob["metadata"]["namespace"] == "digitops"
    spec = cronjob["spec"]
    assert spec["schedule"] == "*/15 * * * *" and spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] < 15 * 60
    assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] < 15 * 60
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    containers = pod["initContainers"] + pod["containers"]
    assert {c["image"] for c in containers} == {DEFAULT_IMAGE}
    (monitor,) = pod["containers"]
    assert monitor["command"] == ["digitops"] and monitor["args"][0] == "monitor"
    # Its own service account, which mounts no token: the monitor calls no Kubernetes API.
    account = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is False
    # Every volume a container mounts is declared, every claim is in the kustomization.
    volumes = {v["name"]: v for v in pod["volumes"]}
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    for container in containers:
        assert {m["name"] for m in container["volumeMounts"]} <= set(volumes)
    assert {
        v["persistentVolumeClaim"]["claimName"]
        for v in volumes.values()
        if "persistentVolumeClaim" in v
    } == claims
    env = environment(monitor, docs)
    assert env["DIGITOPS_REFERENCE"] == "/data/reference"  # on the claim, mounted at /data
    assert any(m["mountPath"] == "/data" for m in monitor["volumeMounts"])
    assert env["DIGITOPS_WEBHOOK_URL"] == ""  # no secret `digitops-alerts`: no webhook
    # The pipeline a retrain submits is the one the init container compiles into /work.
    compiler = next(c for c in pod["initContainers"] if c["command"][1:] == ["pipeline", "compile"])
    pipeline = monitor["args"][monitor["args"].index("--pipeline") + 1]
    assert pipeline == f"{compiler['workingDir']}/pipelines/digits.yaml"
    assert {"name": "work", "mountPath": compiler["workingDir"]} in compiler["volumeMounts"]
    assert {"name": "work", "mountPath": compiler["workingDir"]} in monitor["volumeMounts"]


@kubectl
@pytest.mark.parametrize("gone", ["KFP_HOST", "DIGITOPS_WEBHOOK_URL"])
def test_monitor_arguments_name_only_variables_its_containers_define(gone):
    """Also without the optional secrets: a variable no source defines reaches `digitops
    monitor` as the literal text "$(NAME)"."""
    docs = kustomize(MANIFESTS / "monitor")
    assert undefined_references(docs) == set()
    (config_map,) = [doc for doc in docs if doc["kind"] == "ConfigMap"]
    del config_map["data"][gone]  # the webhook's secret is optional: the ConfigMap's "" stays
    assert undefined_references(docs) == {gone}


@kubectl
def test_monitor_reaches_the_services_other_manifests_define():
    monitor = kustomize(MANIFESTS / "monitor")
    serving = kustomize(MANIFESTS / "serving")
    (container,) = pod_templates(monitor)["digitops-monitor"]["spec"]["containers"]
    env = environment(container, monitor)
    (served,) = pod_templates(serving)["digitops-serving"]["spec"]["containers"]
    served_env = environment(served, serving)
    for name in ("DIGITOPS_STORE", "AWS_ENDPOINT_URL", "MLFLOW_TRACKING_URI"):
        assert env[name] == served_env[name], name  # the store and registry the service uses
    from digitops.pipeline.dag import MLFLOW_LOGIN_SECRET

    secrets = {
        var["name"]: var["valueFrom"]["secretKeyRef"]
        for var in container["env"]
        if "secretKeyRef" in var.get("valueFrom", {})
    }
    assert secrets["MLFLOW_TRACKING_PASSWORD"]["name"] == MLFLOW_LOGIN_SECRET
    assert secrets["DIGITOPS_WEBHOOK_URL"] == {
        "name": "digitops-alerts",
        "key": "webhook-url",
        "optional": True,
    }
    # The KFP API server of the pinned install: its Service in the kubeflow namespace.
    assert re.fullmatch(r"http://ml-pipeline\.kubeflow\.svc:8888", env["KFP_HOST"])


@kubectl
def test_minio_admits_every_pod_that_uses_the_request_store():
    """MinIO's NetworkPolicy lets in the pods of the digitops namespace that name it as their S3
    endpoint (the service, the monitor), by their labels."""
    policy = next(
        d
        for d in kustomize(MANIFESTS / "mlflow")
        if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "minio"
    )
    admitted = [
        peer["podSelector"]["matchLabels"]
        for rule in policy["spec"]["ingress"]
        for peer in rule.get("from", [])
        if peer.get("namespaceSelector", {}).get("matchLabels")
        == {"kubernetes.io/metadata.name": "digitops"}
    ]
    users = []
    for name in ("serving", "monitor"):
        docs = kustomize(MANIFESTS / name)
        for template in pod_templates(docs).values():
            for container in template["spec"]["containers"]:
                if (
                    environment(container, docs)
                    .get("AWS_ENDPOINT_URL", "")
                    .startswith("http://minio.mlflow.svc")
                ):
                    users.append(template["metadata"]["labels"])
    assert len(users) == 2
    for labels in users:
        assert any(selector.items() <= labels.items() for selector in admitted), labels
