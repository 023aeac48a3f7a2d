"""The compiled pipeline, run by `digitops pipeline run` with the KFP local runner."""

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from digitops.pipeline.runner import summarize

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def run_pipeline(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "digitops.cli",
            "pipeline",
            "run",
            "--pipeline",
            str(REPO / "pipelines" / "digits.yaml"),
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory):
    cwd = tmp_path_factory.mktemp("pipeline")
    result = run_pipeline(
        cwd,
        *("--limit", "3000", "--tune-trials", "2", "--epochs", "2"),
        *("--param", "accuracy_threshold=0.5", "--param", "smoke_min_accuracy=0.5"),
        *("--param", "quality_rules=false"),
        *("--param", "approval=auto"),
    )
    try:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        yield cwd, result
    finally:
        from digitops.stages import deploy

        deploy.stop(cwd / "artifacts" / "deployment")  # the local deployment outlives the run


def test_every_task_produced_its_artifacts(local_run):
    cwd, _ = local_run
    (run_dir,) = (cwd / "artifacts" / "pipeline-root").iterdir()
    tasks = {task.name: task for task in summarize(run_dir)}
    stages = {"prepare", "tune", "train", "evaluate", "explain", "drift", "register", "deploy"}
    assert set(tasks) == stages

    dataset = Path(tasks["prepare"].artifacts["dataset"])
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert tasks["prepare"].metadata["dataset"]["version"] == manifest["version"]
    assert tasks["prepare"].metadata["stats"] == {
        "train_images": 2700,
        "val_images": 300,
        "test_images": 3000,
    }

    tuned = tasks["tune"]
    assert tuned.metadata["metrics"]["trials"] == 2
    best = json.loads(Path(tuned.artifacts["best_params"]).read_text())
    assert best["searched"] and best["trials"] == 2
    assert "| trial" in Path(tuned.artifacts["trial_table"]).read_text()

    model = Path(tasks["train"].artifacts["model"])
    assert {"model.onnx", "model.ckpt", "model.json"} <= {p.name for p in model.iterdir()}
    card = json.loads((model / "model.json").read_text())
    assert card["hyperparameters"]["model"]["width"] == best["params"]["model.width"]
    assert card["hyperparameters"]["train"]["lr"] == best["params"]["train.lr"]
    assert tasks["train"].outputs["Output"] == tasks["train"].metadata["model"]["mlflow_run_id"]

    evaluation = tasks["evaluate"]
    assert evaluation.metadata["metrics"]["test_accuracy"] >= 0.5
    matrix = evaluation.metadata["confusion"]["confusionMatrix"]
    assert len(matrix["annotationSpecs"]) == 10
    assert sum(sum(row["row"]) for row in matrix["rows"]) == 3000
    assert Path(evaluation.artifacts["report"]).read_text().startswith("<!doctype html>")

    explained = tasks["explain"]
    faithfulness = explained.metadata["metrics"]
    assert faithfulness["integrated_gradients_drop_at_10"] > faithfulness["random_drop_at_10"]
    assert "deletion" in Path(explained.artifacts["report"]).read_text()

    drifted = tasks["drift"]
    verdict = json.loads(Path(drifted.artifacts["verdict"]).read_text())
    assert drifted.outputs["Output"] is verdict["drifted"] is False
    assert verdict["current_images"] == 3000 and "predicted" in verdict["columns"]

    # The gate passed (threshold 0.5, no production, no drift) and approval is automatic, so
    # the version is the candidate and in production (register's output: deploy it).
    registered = tasks["register"]
    assert registered.outputs["Output"] is True
    summary = registered.metadata["registered"]
    assert summary["version"] == 1 and set(summary["aliases"]) == {"candidate", "production"}

    # Production was deployed locally, as the alias (so promote and rollback reach it), and
    # answered test digits over HTTP.
    deployed = tasks["deploy"]
    endpoint = deployed.outputs["Output"]
    assert endpoint.startswith("http://127.0.0.1:")
    assert deployed.metadata["metrics"]["smoke_accuracy"] >= 0.5
    model = httpx.get(f"{endpoint}/model", timeout=10).json()
    assert model["name"] == "digit-classifier" and model["version"] == "1"
    assert model["source"] == "models:/digit-classifier@production"


def test_a_person_can_follow_the_run(local_run):
    """One line per task start and end, every epoch and every trial; no executor JSON."""
    _, result = local_run
    lines = result.stdout.splitlines()
    assert len(lines) + len(result.stderr.splitlines()) <= 150, result.stderr[-2000:]
    for task in ("prepare", "tune", "train", "evaluate", "explain", "drift", "register", "deploy"):
        assert any(line.endswith(f" {task} started") for line in lines), task
        assert any(f" {task} success in " in line for line in lines), task
    assert sum(line.startswith("  tune: trial ") for line in lines) == 2
    assert [line.split(":")[1].strip() for line in lines if line.startswith("  train: epoch")] == [
        "epoch 1/2",
        "epoch 2/2",
    ]
    assert "Warning" not in result.stdout + result.stderr, "no library warnings either"
    assert "executor_input" not in result.stdout and "Streamed logs" not in result.stdout


def test_commands_use_what_the_run_produced(local_run, monkeypatch):
    """Right after a run, `digitops predict` needs no --model: production (else candidate)."""
    cwd, _ = local_run
    from PIL import Image

    from digitops.data.dataset import load_dataset

    (run_dir,) = (cwd / "artifacts" / "pipeline-root").iterdir()
    dataset = Path({t.name: t for t in summarize(run_dir)}["prepare"].artifacts["dataset"])
    test = load_dataset(dataset).split("test")
    Image.fromarray(255 - test.images[0]).resize((112, 112)).save(cwd / "digit.png")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    predicted = subprocess.run(
        [sys.executable, "-m", "digitops.cli", "predict", "digit.png"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert predicted.returncode == 0, predicted.stderr
    assert "using models:/digit-classifier@production (version 1)" in predicted.stderr
    assert predicted.stdout.startswith("digit.png: ")

    from ..serving_helpers import running_server

    serve = [sys.executable, "-m", "digitops.cli", "serve", "--port"]
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the run's own store, ./mlflow.db
    with running_server("serve", lambda port: [*serve, str(port)], "/health", cwd) as url:
        model = httpx.get(f"{url}/model", timeout=10).json()
    assert model["source"] == "models:/digit-classifier@production" and model["version"] == "1"


def test_run_is_tracked_in_the_working_directory(local_run):
    cwd, result = local_run
    assert (cwd / "mlflow.db").is_file()
    assert "pipeline run finished" in result.stdout
    assert "test_accuracy=" in result.stdout


def test_the_pipeline_and_the_cli_prepare_the_same_dataset_version(local_run):
    """Both take their seeds and defaults from `Config()`: same data, same version hash."""
    cwd, _ = local_run
    (run_dir,) = (cwd / "artifacts" / "pipeline-root").iterdir()
    tasks = {task.name: task for task in summarize(run_dir)}
    out = cwd / "cli-dataset"
    cli = subprocess.run(
        [sys.executable, "-m", "digitops.cli", "prepare", "--limit", "3000", "--out", str(out)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    version = json.loads((out / "manifest.json").read_text())["version"]
    assert tasks["prepare"].metadata["dataset"]["version"] == version


def test_failing_stage_stops_the_run_and_is_named(tmp_path: Path):
    result = run_pipeline(tmp_path, "--source", "no-such-data", "--limit", "100")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: pipeline stopped: task 'prepare' failed: DataError: ")
    assert "no-such-data: data source not found" in last
    assert not list((tmp_path / "artifacts" / "pipeline-root").glob("*/train"))


def test_unknown_parameter_is_rejected(tmp_path: Path):
    result = run_pipeline(tmp_path, "--param", "epoch=3")
    assert result.returncode == 2
    assert "unknown pipeline parameter(s) ['epoch']" in result.stderr
