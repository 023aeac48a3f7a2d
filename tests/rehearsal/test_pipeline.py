"""The pipeline as a cluster runs it, on the rehearsal's topology: every task in the component
image (KFP's DockerRunner) with nothing shared with this machine but the network; tracking to
MLflow's server on PostgreSQL and S3 with only a URI and a login; the search on a two-node Ray
cluster through Ray Client (`ray://`, as a pod reaches KubeRay's head); the registered version
served by the serving image, fetched through the server.

MLflow's server is stopped once the register task is done: the deploy task fails in one line
naming the server. Started again, the same run with `--cache` finishes from where it stopped:
the tasks that succeeded are not run again, and the version registered before the failure is
gated again, not registered twice."""

import os
import re
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from digitops.data.dataset import load_dataset
from digitops.net import free_port
from digitops.pipeline.runner import DOCKER_WORK, summarize

from ..docker.test_images import COMPONENT, SERVING, _wait_healthy, docker
from ..serving_helpers import png, running_moto, s3_client
from .topology import (
    BUCKET,
    LOGIN,
    bucket_keys,
    rows,
    running_mlflow,
    running_postgres,
    running_ray_cluster,
)

pytestmark = [pytest.mark.rehearsal, pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MODEL = "digit-classifier"
ALL_TASKS = {"prepare", "tune", "train", "evaluate", "explain", "drift", "register", "deploy"}
# Tasks with effects beyond their outputs: never taken from the cache (pipeline/dag.py).
ALWAYS_RUN = {"drift", "register", "deploy"}


def _pipeline(root: Path, tracking: str, ray_address: str) -> list[str]:
    return [
        *(sys.executable, "-m", "digitops.cli", "pipeline", "run", "--docker", "--cache"),
        *("--pipeline", str(REPO / "pipelines" / "digits.yaml"), "--root", str(root)),
        *("--ray-address", ray_address, "--param", f"mlflow_tracking_uri={tracking}"),
        *("--limit", "4000", "--tune-trials", "2", "--epochs", "2"),
        *("--param", "accuracy_threshold=0.5", "--param", "smoke_min_accuracy=0.5"),
        *("--param", "quality_rules=false", "--param", "approval=auto"),
    ]


def _client_env(tracking: str, ray_env: dict[str, str]) -> dict[str, str]:
    """This machine's environment as a pod would see the cluster: MLflow's URI and login, the
    Ray cluster's token, no S3 credentials and no other MLflow settings. MLflow's client gives
    up after two quick retries here (its default waits minutes for a server to come back)."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MLFLOW_", "AWS_", "RAY_"))
    }
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    return kept | {"MLFLOW_TRACKING_URI": tracking, **LOGIN, **ray_env, **quick}


@pytest.fixture(scope="module", autouse=True)
def images() -> None:
    for image in (COMPONENT, SERVING):
        if not docker("images", "-q", image).strip():
            pytest.fail(f"{image} is missing: run `make images` (make test does)")


@pytest.mark.timeout(2400)  # two pipeline runs; a hung task fails the test, not CI
def test_the_pipeline_in_containers_on_the_cluster_topology(mnist_slice: Path, tmp_path: Path):
    root = tmp_path / "root"
    with ExitStack() as topology:
        postgres = topology.enter_context(running_postgres(tmp_path))
        s3 = topology.enter_context(running_moto(tmp_path))
        s3_client(s3).create_bucket(Bucket=BUCKET)
        cluster = topology.enter_context(running_ray_cluster(tmp_path, nodes=2))
        server = ExitStack()  # MLflow's server, stopped mid-run below (or when the test ends)
        topology.callback(server.close)
        tracking = server.enter_context(running_mlflow(tmp_path, postgres, s3))
        command = _pipeline(root, tracking, cluster.client_address)
        env = _client_env(tracking, cluster.env)

        # The first run: MLflow's server goes away once register is done, before deploy.
        with open(tmp_path / "first-run.err", "w+") as stderr:
            first = subprocess.Popen(
                command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
            )
            assert first.stdout is not None
            printed = []
            for line in first.stdout:
                printed.append(line)
                if re.search(r"\bregister success\b", line):
                    server.close()
            assert first.wait(timeout=60) == 2, "".join(printed)
            stderr.seek(0)
            errors = stderr.read()
        assert errors.strip().splitlines() == [
            f"error: pipeline stopped: task 'deploy' failed: MLflow's tracking server at "
            f"{tracking} did not answer (Connection refused): start it, or check the tracking "
            "URI, and run again (`--cache` skips the tasks that finished)"
        ], errors
        (first_dir,) = set(root.iterdir()) - {root / DOCKER_WORK, root / ".kfp_cache"}
        assert {task.name for task in summarize(first_dir)} == ALL_TASKS - {"deploy"}

        # The same run once the server is back: it picks up where it stopped.
        port = urlsplit(tracking).port
        topology.enter_context(running_mlflow(tmp_path, postgres, s3, port=port))
        second = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200
        )
        assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-2000:]
        (second_dir,) = set(root.iterdir()) - {root / DOCKER_WORK, root / ".kfp_cache", first_dir}
        tasks = {task.name: task for task in summarize(second_dir)}
        assert set(tasks) == ALWAYS_RUN  # the others came from the cache
        assert tasks["deploy"].metadata["metrics"]["smoke_accuracy"] >= 0.5

        # One version, registered before the failure and gated again after it; its run, params
        # and metrics are rows in PostgreSQL, its files objects in the bucket, not on this disk.
        versions = rows(
            postgres, "SELECT version, run_id FROM model_versions WHERE name = %s", MODEL
        )
        assert len(versions) == 1, versions
        ((version, run_id),) = versions
        assert tasks["register"].metadata["registered"]["version"] == version
        assert rows(postgres, "SELECT status FROM runs WHERE run_uuid = %s", run_id) == [
            ("FINISHED",)
        ]
        params = dict(rows(postgres, "SELECT key, value FROM params WHERE run_uuid = %s", run_id))
        assert params["train.epochs"] == "2"
        metrics = {key for (key,) in rows(postgres, "SELECT DISTINCT key FROM metrics")}
        assert {"val_accuracy", "train_loss", "test_accuracy"} <= metrics
        keys = bucket_keys(s3)
        for file in ("model.onnx", "model.int8.onnx", "MLmodel"):
            assert any(key.endswith(f"/{file}") for key in keys), (file, keys)
        work = root / DOCKER_WORK
        assert not {"mlruns", "mlartifacts", "mlflow.db"} & {path.name for path in work.iterdir()}

        # The search ran in the Ray cluster, its trials on both nodes.
        (trials,) = first_dir.glob("**/tune/trial_table")
        assert all(node[:8] in trials.read_text() for node in cluster.node_ids)

        # The serving image, given only the version's URI and MLflow's address and login.
        answers, labels = _serve_50_digits(mnist_slice, tracking, tmp_path)
    right = sum(answer == str(label) for answer, label in zip(answers, labels, strict=True))
    assert right >= 45, answers


def _serve_50_digits(dataset: Path, tracking: str, work: Path) -> tuple[list[str], list[int]]:
    port = free_port()
    name = f"digitops-rehearsal-{port}"
    settings = {
        "PORT": str(port),
        "DIGITOPS_MODEL": f"models:/{MODEL}@candidate",
        "MLFLOW_TRACKING_URI": tracking,
        **LOGIN,
    }
    docker(
        *("run", "--detach", "--rm", "--name", name, "--network", "host"),
        *(arg for key, value in settings.items() for arg in ("-e", f"{key}={value}")),
        *("--health-interval", "1s", "--health-start-period", "1s", SERVING),
    )
    try:
        _wait_healthy(name)
        test = load_dataset(dataset).split("test")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            model = client.get("/model").json()
            answers = [
                client.post("/predict", files={"file": ("d.png", png(image))}).json()["digit"]
                for image in test.images[:50]
            ]
        assert (model["name"], model["source"]) == (MODEL, f"models:/{MODEL}@candidate"), model
        return answers, [int(label) for label in test.labels[:50]]
    finally:
        (work / "serving.log").write_text(docker("logs", name, check=False))
        docker("rm", "--force", name, check=False)
