"""The drift stage: Evidently on image descriptors, full MNIST train (60,000) vs test (10,000)."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from digitops.config import DriftConfig
from digitops.data.dataset import load_dataset
from digitops.stages import drift, prepare

from ..conftest import make_config
from ..helpers import inverted, noisy, rotated, thickened

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def full_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All of bundled MNIST: 54,000 train + 6,000 val (the reference) and 10,000 test."""
    work = tmp_path_factory.mktemp("full")
    prepare.run(make_config(work), work / "dataset")
    return work / "dataset"


@pytest.fixture(scope="module")
def reference(full_mnist: Path):
    dataset = load_dataset(full_mnist, verify=False)
    images = np.concatenate([dataset.split("train").images, dataset.split("val").images])
    return drift.descriptor_table(images, model=None)


@pytest.fixture(scope="module")
def test_images(full_mnist: Path) -> np.ndarray:
    return load_dataset(full_mnist, verify=False).split("test").images


def verdict_for(reference, images: np.ndarray) -> dict:
    verdict, _ = drift.detect(DriftConfig(), reference, drift.descriptor_table(images, None))
    return verdict


def test_mnist_test_split_does_not_drift_from_train(tmp_path: Path, full_mnist: Path):
    # The whole stage, 10,000 current vs 60,000 reference, as `digitops drift` runs it.
    result = drift.run(make_config(tmp_path), full_mnist, None, tmp_path / "drift")
    assert (result.reference_images, result.current_images) == (60_000, 10_000)
    assert not result.drifted and result.drifted_share < 0.2
    verdict = json.loads((tmp_path / "drift" / drift.VERDICT).read_text())
    assert verdict["drifted"] is False and len(verdict["columns"]) == 11
    assert all(column["method"] == "wasserstein" for column in verdict["columns"].values())
    report = (tmp_path / "drift" / drift.REPORT).read_text()
    assert report.lstrip().lower().startswith("<!doctype html>") and "stroke_thickness" in report


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda x: rotated(x, 30), id="rotated-30-degrees"),
        pytest.param(inverted, id="inverted"),
        pytest.param(noisy, id="heavy-noise"),
        pytest.param(thickened, id="thickened-strokes"),
    ],
)
def test_changed_test_split_drifts(reference, test_images: np.ndarray, change):
    verdict = verdict_for(reference, change(test_images))
    assert verdict["drifted"], verdict["columns"]
    assert verdict["drifted_share"] >= DriftConfig().drift_share


def test_image_folder_with_model_predictions(
    tmp_path: Path, mnist_slice: Path, trained, test_images: np.ndarray
):
    folder = tmp_path / "incoming"
    (folder / "day1").mkdir(parents=True)
    for i, image in enumerate(inverted(test_images[:300])):
        Image.fromarray(image).save(folder / "day1" / f"{i}.png")
    result = drift.run(
        make_config(tmp_path), mnist_slice, str(folder), tmp_path / "drift", trained.model_dir
    )
    assert result.drifted and result.current_images == 300
    verdict = json.loads((tmp_path / "drift" / drift.VERDICT).read_text())
    assert {"predicted", "confidence"} <= set(verdict["columns"])
    assert verdict["columns"]["predicted"]["method"] == "jensenshannon"

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = mlflow.search_runs(experiment_names=["digitops"], output_format="list")
    assert run.data.tags["drift_verdict"] == "drift"
    assert run.data.metrics["drifted_share"] == pytest.approx(result.drifted_share)


def test_request_log_is_current_data(tmp_path: Path, mnist_slice: Path, test_images: np.ndarray):
    # A random sample: the MNIST test file is ordered by writer group, so its first few hundred
    # digits really do differ from the training data.
    sample = np.random.default_rng(0).choice(len(test_images), 2000, replace=False)
    table = drift.descriptor_table(test_images[sample], model=None)
    table["predicted"], table["model_version"] = "7", "3"
    log = tmp_path / "requests.jsonl"
    table.to_json(log, orient="records", lines=True)
    result = drift.run(make_config(tmp_path), mnist_slice, str(log), tmp_path / "drift")
    assert result.current_images == 2000 and not result.drifted
