"""`digitops select` on a real store and a trained model: what is picked, what is left out, and
what is refused."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from digitops.cli import app
from digitops.data.idx import BUNDLED_MNIST, load_idx_dir
from digitops.errors import DataError, StoreError
from digitops.labeling.batches import Model, batch_images, load_batch, select
from digitops.model.artifact import OnnxClassifier
from digitops.store.layout import image_hash
from digitops.store.writer import Correction, StoreWriter

from ..store.test_store import CLASSES, keep


@pytest.fixture()
def store(tmp_path: Path) -> tuple[str, list[str], np.ndarray]:
    """120 MNIST test digits predicted (the first 10 twice), the first 20 labeled."""
    images = load_idx_dir(BUNDLED_MNIST).test_images[:120]
    writer = StoreWriter(str(tmp_path / "store"), "service")
    ids = keep(writer, images) + keep(writer, images[:10])
    writer.label([Correction(i, "7", "api") for i in ids[:20]], CLASSES)
    return writer.uri, ids, images


@pytest.fixture(scope="module")
def model(trained) -> Model:  # type: ignore[no-untyped-def]
    return Model(OnnxClassifier.load(trained.model_dir), "digits", "3")


def test_a_batch_is_unlabeled_images_once_each_with_their_scores(store, model: Model):
    uri, ids, images = store
    batch = select(uri, model, 30, seed=1)
    assert batch.pool == 100  # 120 images, 20 of them labeled; repeats count once
    picked = [item["request_id"] for item in batch.items]
    assert len(set(picked)) == 30 and not set(picked) & set(ids[:20])
    hashes = {image_hash(image) for image in images[:20]}
    assert not {item["image"] for item in batch.items} & hashes
    probabilities = model.classifier.probabilities(batch_images(batch))
    for item, p in zip(batch.items, probabilities, strict=True):
        top2 = np.sort(p)[-2:]
        assert item["margin"] == pytest.approx(top2[1] - top2[0], abs=1e-5)
        assert item["predicted"] == CLASSES[int(p.argmax())]
    assert [i["uncertainty"] for i in batch.items] == sorted(
        (i["uncertainty"] for i in batch.items), reverse=True
    )
    kept = json.loads((Path(uri) / "queue" / f"{batch.batch_id}.json").read_text())
    assert kept["model_version"] == "3" and kept["strategy"] == "uncertainty-diversity"
    assert load_batch(uri, "latest").items == batch.items


def test_queued_images_are_not_picked_again(store, model: Model):
    uri, _, _ = store
    first = select(uri, model, 60)
    second = select(uri, model, 60)
    assert second.pool == 40 and len(second.items) == 40
    assert not {i["image"] for i in first.items} & {i["image"] for i in second.items}
    with pytest.raises(DataError, match="is labeled or queued; nothing to select"):
        select(uri, model, 10)
    again = select(uri, model, 10, requeue=True)  # batches nobody labeled: pick among them
    assert {i["image"] for i in again.items} <= {i["image"] for i in first.items + second.items}


def test_an_image_gone_from_the_store_is_named_and_nothing_is_queued(store, model: Model):
    uri, _, _ = store
    for pack in Path(uri).glob("blobs/*/*.pack"):
        pack.write_bytes(pack.read_bytes()[:1000])  # the images of all but the first request
    with pytest.raises(StoreError, match="is gone or unreadable.*nothing was queued"):
        select(uri, model, 10)
    assert not (Path(uri) / "queue").exists()


def test_the_command_line_refuses_bad_options_with_exit_2(store, trained, tmp_path: Path):
    uri, _, _ = store
    runner = CliRunner()
    model_dir = str(trained.model_dir)
    done = runner.invoke(app, ["select", "--store", uri, "--budget", "5", "--model", model_dir])
    assert done.exit_code == 0, done.output
    assert "batch " in done.output and "5 of 100 unlabeled images" in done.output
    assert (
        runner.invoke(
            app, ["select", "--store", uri, "--model", model_dir, "--budget", "95"]
        ).exit_code
        == 0
    )
    requeued = ["select", "--store", uri, "--model", model_dir, "--budget", "3", "--requeue"]
    done = runner.invoke(app, requeued)
    assert done.exit_code == 0 and "3 of 100 unlabeled images" in done.output, done.output
    for args, message in [
        (["--strategy", "bogus"], "--strategy is one of"),
        (["--budget", "0"], "pick at least one image"),
        (["--store", str(tmp_path / "nothing")], "not a request store"),
        (["--budget", "500"], "is labeled or queued; nothing to select"),
    ]:
        done = runner.invoke(app, ["select", "--store", uri, "--model", model_dir, *args])
        assert done.exit_code == 2 and message in done.output, done.output
