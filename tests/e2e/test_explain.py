"""The explain stage on the session's small trained model: Captum attributions that are faithful."""

import json
import shutil
from pathlib import Path

import mlflow
import pytest

from digitops.errors import ModelError
from digitops.stages import explain

from ..conftest import make_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def explained(work: Path, trained, mnist_slice: Path) -> explain.ExplainResult:
    config = make_config(work, "explain.faithfulness_images=200")
    return explain.run(config, trained.model_dir, mnist_slice, work / "explanation")


def test_attributions_remove_confidence_faster_than_random_pixels(explained):
    # Removing the top 10 % of pixels by attribution must hurt far more than a random 10 %.
    assert explained.drop_at_10["integrated_gradients"] > 3 * explained.random_drop_at_10
    assert explained.drop_at_10["occlusion"] > 3 * explained.random_drop_at_10
    assert explained.drop_at_10["saliency"] > explained.random_drop_at_10
    assert explained.auc_ratio["integrated_gradients"] < 0.6
    assert all(ratio < 1 for ratio in explained.auc_ratio.values())


def test_explanation_writes_metrics_figures_and_report(explained):
    out = explained.out_dir
    metrics = json.loads((out / explain.METRICS).read_text())
    assert set(metrics["methods"]) == set(explain.METHODS)
    assert metrics["images"] == 200 and 0.1 in metrics["fractions"]
    assert all(len(c) == len(metrics["fractions"]) for c in metrics["curves"].values())
    for name in ("attributions.png", "deletion_curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / explain.REPORT).read_text()
    assert "Integrated Gradients" in page and page.count("data:image/png;base64") == 2


def test_explanation_is_added_to_the_training_run(work: Path, trained, explained):
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    run = mlflow.get_run(trained.mlflow_run_id)
    assert "integrated_gradients_auc_ratio" in run.data.metrics
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "explanation")}
    assert "explanation/report.html" in files


def test_model_without_checkpoint_is_refused(tmp_path: Path, trained, mnist_slice: Path):
    model = tmp_path / "model"
    shutil.copytree(trained.model_dir, model)
    (model / "model.ckpt").unlink()
    with pytest.raises(ModelError, match=r"no model.ckpt to explain"):
        explain.run(make_config(tmp_path), model, mnist_slice, tmp_path / "explanation")
