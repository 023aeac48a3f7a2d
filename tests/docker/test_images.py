"""The images `make images` builds, exercised: the pipeline in the component image (KFP's
DockerRunner), the service in the serving image, the handler in the Lambda image."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import digitops
from digitops.data.dataset import load_dataset
from digitops.net import free_port
from digitops.pipeline.runner import summarize

from ..serving_helpers import aws_env, png, running_moto, s3_client, s3_event

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
REGISTRY = os.environ.get("REGISTRY", "ghcr.io/digitops")
COMPONENT, SERVING, LAMBDA = (
    f"{REGISTRY}/{name}:{digitops.__version__}" for name in ("digitops", "serving", "lambda")
)


def docker(*args: str, check: bool = True, timeout: float = 300) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {done.stderr[-2000:]}")
    return done.stdout


@pytest.fixture(scope="module", autouse=True)
def images() -> None:
    for image in (COMPONENT, SERVING, LAMBDA):
        if not docker("images", "-q", image).strip():
            pytest.fail(f"{image} is missing: run `make images` (make test does)")


def test_pipeline_runs_in_the_component_image(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    root = tmp_path / "root"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "digitops.cli", "pipeline", "run", "--docker", "--verbose"),
            *("--pipeline", str(REPO / "pipelines" / "digits.yaml"), "--root", str(root)),
            *("--limit", "2000", "--tune-trials", "0", "--epochs", "2"),
            *("--param", "accuracy_threshold=0.5", "--param", "smoke_min_accuracy=0.5"),
            *("--param", "quality_rules=false"),
            *("--param", "approval=auto"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert f"Found image '{COMPONENT}'" in result.stdout  # DockerRunner ran each task in it
    (run_dir,) = set(root.iterdir()) - {root / "work"}
    tasks = {task.name: task for task in summarize(run_dir)}
    assert set(tasks) == {
        *("prepare", "tune", "train", "evaluate", "explain", "drift", "register", "deploy")
    }
    assert tasks["evaluate"].metadata["metrics"]["test_accuracy"] > 0.5
    assert tasks["deploy"].metadata["metrics"]["smoke_accuracy"] >= 0.5
    # The tasks ran as this user in <root>/work: the MLflow store is there, and ours.
    store = root / "work" / "mlflow.db"
    assert store.is_file() and store.stat().st_uid == os.getuid()
    assert (root / "work" / "mlruns").is_dir()


def test_serving_image_serves_a_mounted_model(trained, mnist_slice, tmp_path):
    port = free_port()
    name = f"digitops-serving-test-{port}"
    model = trained.model_dir.resolve()
    docker(
        *("run", "--detach", "--rm", "--name", name, "--network", "host"),
        *("-e", f"PORT={port}", "--health-interval", "1s", "--health-start-period", "1s"),
        *("-v", f"{model}:/opt/model:ro", SERVING),
    )
    try:
        _wait_healthy(name)
        test = load_dataset(mnist_slice).split("test")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            answers = [
                client.post("/predict", files={"file": ("d.png", png(image))}).json()["digit"]
                for image in test.images[:50]
            ]
            bad = client.post("/predict", files={"file": ("x.png", b"not an image")})
        right = sum(a == str(label) for a, label in zip(answers, test.labels[:50], strict=True))
        assert right >= 45
        assert bad.status_code == 422 and "error" in bad.json()
    finally:
        docker("rm", "--force", name, check=False)


def test_serving_and_lambda_images_hold_no_training_stack():
    training = ("torch", "lightning", "ray", "captum", "evidently")
    check = (
        f"import importlib.util as u; found = [m for m in {training!r} if u.find_spec(m)]; "
        "assert not found, found"
    )
    docker("run", "--rm", "--entrypoint", "python3", SERVING, "-c", check)
    docker("run", "--rm", "--entrypoint", "python3", LAMBDA, "-c", check)
    # The Lambda function's dependencies (everything under /var/task but our package) in MB.
    size = docker(
        *("run", "--rm", "--entrypoint", "sh", LAMBDA, "-c"),
        "du -sm --exclude=digitops /var/task | cut -f1",
    )
    assert int(size) <= 150


def test_lambda_image_answers_s3_events(trained, mnist_slice, tmp_path):
    test = load_dataset(mnist_slice).split("test")
    with running_moto(tmp_path) as endpoint:
        env = aws_env(endpoint)
        s3 = s3_client(endpoint)
        s3.create_bucket(Bucket="digits")
        body = png(test.images[0])
        s3.put_object(Bucket="digits", Key="uploads/d.png", Body=body)
        event = json.dumps(s3_event("digits", "uploads/d.png", len(body)))
        invoke = (
            "import json, sys; from digitops.serving.aws_lambda import handler; "
            "print(json.dumps(handler(json.loads(sys.argv[1]), None)))"
        )
        docker(
            *("run", "--rm", "--network", "host", "--entrypoint", "python3"),
            *(arg for name, value in env.items() for arg in ("-e", f"{name}={value}")),
            *("-v", f"{trained.model_dir.resolve()}:/opt/model:ro", LAMBDA),
            *("-c", invoke, event),
        )
        answer = json.loads(
            s3.get_object(Bucket="digits", Key="results/uploads/d.png.json")["Body"].read()
        )
    assert answer["digit"] == str(test.labels[0])


def _wait_healthy(name: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = docker("inspect", "--format", "{{.State.Health.Status}}", name, check=False)
        if status.strip() == "healthy":
            return
        time.sleep(1)
    logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
    raise AssertionError(f"{name} did not become healthy:\n{logs.stdout}{logs.stderr}")
