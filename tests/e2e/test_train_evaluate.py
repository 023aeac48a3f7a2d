"""prepare → train → evaluate on a few thousand MNIST images, tracked in a throwaway MLflow."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from digitops.data.dataset import load_dataset
from digitops.errors import ModelError
from digitops.stages import evaluate, prepare, register

from ..conftest import SHORT_EPOCHS, make_config
from ..helpers import write_image_folder

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def report(work: Path, trained, mnist_slice: Path) -> Path:
    out = work / "evaluation"
    evaluate.run(make_config(work), trained.model_dir, mnist_slice, out)
    return out


def test_short_training_run_exceeds_90_percent_test_accuracy(report: Path):
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.90
    assert set(metrics["per_class"]) == {str(i) for i in range(10)}
    assert all(
        {"precision", "recall", "f1", "support"} <= set(v) for v in metrics["per_class"].values()
    )
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["test_images"]


def test_the_int8_file_is_small_and_judged_like_the_fp32_one(trained, report: Path):
    metrics = json.loads((report / "metrics.json").read_text())
    int8 = metrics["int8"]
    assert int8["size_bytes"] == (trained.model_dir / "model.int8.onnx").stat().st_size <= 30_000
    assert abs(int8["test_accuracy"] - metrics["test_accuracy"]) <= 0.005  # a 4-epoch model
    assert int8["agreement"] >= 0.99
    assert set(int8["behavior"]) == set(metrics["behavior"])
    card = json.loads((trained.model_dir / "model.json").read_text())
    assert card["int8"]["size_bytes"] == int8["size_bytes"] and card["int8"]["images"] > 0


def test_evaluation_writes_the_figures(report: Path):
    for name in ("confusion_matrix.png", "misclassified.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_directory_holds_the_contract(trained, mnist_slice: Path):
    card = json.loads((trained.model_dir / "model.json").read_text())
    assert (trained.model_dir / "model.onnx").is_file() and (
        trained.model_dir / "model.ckpt"
    ).is_file()
    assert card["dataset"]["version"] == load_dataset(mnist_slice).version
    assert card["parameters"] == trained.parameters <= 25_000
    assert card["class_names"] == [str(i) for i in range(10)]
    assert card["onnx"]["max_abs_diff_vs_torch"] < 1e-4


def test_training_run_is_tracked_in_mlflow(work: Path, trained, report: Path, mnist_slice: Path):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    run = client.get_run(trained.mlflow_run_id)
    assert run.data.tags["dataset_version"] == load_dataset(mnist_slice).version
    assert run.data.params["train.epochs"] == str(SHORT_EPOCHS)
    # One point per epoch, then the kept checkpoint's value, which is the run's `val_accuracy`.
    history = sorted(
        client.get_metric_history(run.info.run_id, "val_accuracy"), key=lambda m: m.step
    )
    assert len(history) == trained.epochs + 1
    assert history[-1].value == pytest.approx(trained.val_accuracy)
    assert run.data.metrics["val_accuracy"] == pytest.approx(trained.val_accuracy)
    assert run.data.metrics["test_accuracy"] > 0.90
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id, "model")}
    artifacts |= {f.path for f in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {
        "model/model.onnx",
        "model/model.json",
        "evaluation/metrics.json",
        "evaluation/confusion_matrix.png",
        "evaluation/misclassified.png",
    } <= artifacts
    assert run.inputs.dataset_inputs[0].dataset.digest == load_dataset(mnist_slice).version[:36]


def test_evaluate_rejects_data_with_other_classes(work: Path, trained, tmp_path: Path):
    rng = np.random.default_rng(0)
    write_image_folder(
        tmp_path / "imgs", rng.integers(0, 255, (20, 28, 28), dtype=np.uint8), np.array([0, 1] * 10)
    )
    prepare.run(make_config(tmp_path, f"prepare.source={tmp_path / 'imgs'}"), tmp_path / "ds")
    with pytest.raises(ModelError, match="classes"):
        evaluate.run(make_config(tmp_path), trained.model_dir, tmp_path / "ds", tmp_path / "ev")


def test_the_pipelines_register_task_reuses_the_version_of_its_training_run(
    work: Path, trained, report: Path, tmp_path: Path
):
    """A pipeline run that stopped after registering, run again with its tasks cached, hands
    register the same model: it gates that version again instead of adding one."""
    config = make_config(
        work,
        "registry.model_name=reuse-check",
        "registry.accuracy_threshold=0.5",
        "registry.quality_rules=false",
    )
    first = register.run(
        config, trained.model_dir, report, card_dir=tmp_path / "a", reuse_version=True
    )
    again = register.run(
        config, trained.model_dir, report, card_dir=tmp_path / "b", reuse_version=True
    )
    assert first.version == again.version == 1 and again.aliases == ["candidate"]
    # Outside the pipeline, registering a model again is a new version, as before.
    assert register.run(config, trained.model_dir, report, card_dir=tmp_path / "c").version == 2
