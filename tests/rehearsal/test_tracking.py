"""Train, evaluate and register through MLflow's tracking server as the cluster runs it: runs,
params and metrics land in PostgreSQL, the model's files in S3 through the server (the client
has no S3 credentials), nothing on local disk; and the registered version serves 50 digits
fetched through the server by its alias."""

from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from digitops.config import load_config
from digitops.data.dataset import load_dataset
from digitops.serving.predictor import load_predictor
from digitops.stages import evaluate, register, train

from .topology import Tracking, bucket_keys, rows, running_tracking

pytestmark = [pytest.mark.rehearsal, pytest.mark.integration, pytest.mark.slow]

MODEL = "digit-classifier"
# What a task's pod has for MLflow (the tracking URI and the login) and nothing else: no S3.
CLIENT_ONLY = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_S3_ENDPOINT_URL",
)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory):
    with running_tracking(tmp_path_factory.mktemp("tracking")) as started:
        yield started


@pytest.fixture
def client_env(tracking: Tracking, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CLIENT_ONLY:
        monkeypatch.delenv(name, raising=False)
    for name, value in tracking.client_env().items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("client_env")
def test_a_registered_version_lives_in_postgresql_and_s3(
    tracking: Tracking, mnist_slice: Path, tmp_path: Path
):
    config = load_config(
        None,
        [
            f"tracking.uri={tracking.url}",
            "train.progress=false",
            "train.epochs=1",
            "registry.accuracy_threshold=0.5",
            "registry.quality_rules=false",
        ],
    )
    trained = train.run(config, mnist_slice, tmp_path / "model")
    evaluate.run(config, trained.model_dir, mnist_slice, tmp_path / "evaluation")
    registered = register.run(config, trained.model_dir, tmp_path / "evaluation")
    assert registered.gate_passed and registered.aliases == ["candidate"]

    # Runs, params and metrics are rows in PostgreSQL.
    assert rows(
        tracking.postgres, "SELECT status FROM runs WHERE run_uuid = %s", trained.mlflow_run_id
    ) == [("FINISHED",)]
    params = dict(
        rows(
            tracking.postgres,
            "SELECT key, value FROM params WHERE run_uuid = %s",
            trained.mlflow_run_id,
        )
    )
    assert params["train.epochs"] == "1"
    metrics = {key for (key,) in rows(tracking.postgres, "SELECT DISTINCT key FROM metrics")}
    assert {"val_accuracy", "train_loss", "test_accuracy"} <= metrics
    versions = rows(tracking.postgres, "SELECT version FROM model_versions WHERE name = %s", MODEL)
    assert versions == [(registered.version,)]

    # The version's files are in the bucket, and were sent there by the server.
    keys = bucket_keys(tracking.s3)
    for name in ("model.onnx", "model.int8.onnx", "MLmodel"):
        assert any(key.endswith(f"/{name}") for key in keys), (name, keys)
    version = MlflowClient().get_model_version(MODEL, str(registered.version))
    assert version.source.startswith("models:/")
    run = MlflowClient().get_run(trained.mlflow_run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied, not s3:// direct
    # ...and nowhere on local disk: not beside the server, not beside the client's files.
    for root in (tracking.work, tmp_path):
        assert not (root / "mlartifacts").exists() and not (root / "mlruns").exists()
    assert not list(tracking.work.rglob("*.onnx"))

    # The version, fetched through the server by its alias, reads the test digits.
    predictor = load_predictor(f"models:/{MODEL}@candidate")
    assert predictor.version == str(registered.version)
    test = load_dataset(mnist_slice).split("test")
    images = test.images[:50].astype(np.float32) / 255
    answers = [prediction.digit for prediction in predictor.predict(images)]
    right = sum(
        answer == str(label) for answer, label in zip(answers, test.labels[:50], strict=True)
    )
    assert right >= 45, answers
