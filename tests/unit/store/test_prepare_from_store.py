"""`prepare --source <request store>`: the labeled production images become a dataset whose
manifest names every request that went in, optionally mixed with MNIST at a stated ratio."""

import json
from pathlib import Path

import numpy as np
import pytest

from digitops.data.dataset import load_dataset
from digitops.data.idx import BUNDLED_MNIST, load_idx_dir
from digitops.errors import DataError
from digitops.stages import prepare
from digitops.store.layout import image_hash
from digitops.store.writer import Correction, StoreWriter

from ...conftest import REPO, make_config
from .test_store import CLASSES, keep


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """40 MNIST test digits predicted, 30 of them labeled with their true digit."""
    idx = load_idx_dir(BUNDLED_MNIST)
    writer = StoreWriter(str(tmp_path_factory.mktemp("prod") / "store"), "service")
    ids = keep(writer, idx.test_images[:40])
    writer.label(
        [Correction(i, str(idx.test_labels[n]), "api") for n, i in enumerate(ids[:30])], CLASSES
    )
    return writer.uri, {image_hash(idx.test_images[n]): str(idx.test_labels[n]) for n in range(30)}


def dataset_images(root: Path) -> dict[str, list[str]]:
    data = load_dataset(root)
    return {
        name: [image_hash(image) for image in data.split(name).images]
        for name in ("train", "val", "test")
    }


def test_a_store_becomes_a_dataset_of_exactly_its_labeled_images(tmp_path: Path, store):
    uri, labeled = store
    result = prepare.run(make_config(tmp_path, f"prepare.source={uri}"), tmp_path / "ds")
    splits = dataset_images(tmp_path / "ds")
    every = [h for hashes in splits.values() for h in hashes]
    assert sorted(every) == sorted(labeled) and sum(result.images.values()) == 30
    assert not set(splits["test"]) & (set(splits["train"]) | set(splits["val"]))
    data = load_dataset(tmp_path / "ds")
    for name in ("train", "test"):
        split = data.split(name)
        for image, label in zip(split.images, split.labels, strict=True):
            assert data.class_names[label] == labeled[image_hash(image)]
    manifest = data.manifest
    assert manifest["source"]["store"] == uri and manifest["source"]["production_images"] == 30
    records = json.loads((tmp_path / "ds" / "records.json").read_text())
    assert sorted(r["image"] for r in records) == sorted(labeled)
    assert "records.json" in manifest["files"]  # part of the dataset version


def test_mnist_is_mixed_in_at_the_stated_ratio(tmp_path: Path, store):
    uri, labeled = store
    config = make_config(tmp_path, f"prepare.source={uri}", "prepare.mnist_ratio=2")
    result = prepare.run(config, tmp_path / "mixed")
    assert sum(result.images.values()) == 90 and result.class_names == CLASSES
    splits = dataset_images(tmp_path / "mixed")
    production = [h for hashes in splits.values() for h in hashes if h in labeled]
    assert sorted(production) == sorted(labeled)
    # MNIST test digits go to the test split only; its training digits never do.
    mnist_test = {image_hash(i) for i in load_idx_dir(BUNDLED_MNIST).test_images}
    assert not (set(splits["train"]) | set(splits["val"])) & (mnist_test - set(labeled))
    assert len(json.loads((tmp_path / "mixed" / "records.json").read_text())) == 30


def test_a_ratio_without_a_store_and_an_unlabeled_store_are_refused(tmp_path: Path):
    with pytest.raises(DataError, match="not a request store"):
        prepare.run(make_config(tmp_path, "prepare.mnist_ratio=1"), tmp_path / "x")
    writer = StoreWriter(str(tmp_path / "empty"), "service")
    keep(writer, np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(DataError, match="no labeled image yet"):
        prepare.run(make_config(tmp_path, f"prepare.source={writer.uri}"), tmp_path / "y")
    assert not (tmp_path / "y").exists()


@pytest.mark.slow
def test_the_compiled_prepare_task_takes_a_store_and_mixes_mnist_in(tmp_path: Path, store):
    """A labeled batch goes straight to a KFP run: `source` and `mnist_ratio` are pipeline
    parameters, and the prepare component (as compiled, run by the KFP local runner) builds
    its dataset from the store."""
    import yaml
    from kfp import components, local

    uri, labeled = store
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    task = components.load_component_from_file(str(REPO / "components" / "prepare.yaml"))
    done = task(source=uri, mnist_ratio=2.0, limit=0, prepare_seed=0)
    splits = dataset_images(Path(done.outputs["dataset"].path))
    every = [h for hashes in splits.values() for h in hashes]
    assert set(labeled) <= set(every) and len(every) == 30 * 3
    pipeline = next(yaml.safe_load_all((REPO / "pipelines" / "digits.yaml").read_text()))
    assert {"source", "mnist_ratio"} <= set(pipeline["root"]["inputDefinitions"]["parameters"])
