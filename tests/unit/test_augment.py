import json

import numpy as np
import pytest
import torch

from digitops.config import AugmentConfig
from digitops.data.augment import Augmenter, build_augmentation
from digitops.data.datamodule import BatchedSplit, DigitDataModule
from digitops.data.dataset import AUGMENT, load_dataset


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    batch = np.zeros((16, 28, 28), np.uint8)
    batch[:, 8:20, 12:16] = rng.integers(128, 256, size=(16, 12, 4))
    return batch


def test_augmentation_roundtrips_through_json(images: np.ndarray):
    spec = json.loads(json.dumps(build_augmentation(AugmentConfig())))
    out = Augmenter(spec, seed=1)(images)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert not np.array_equal(out, images)
    assert np.array_equal(out, Augmenter(spec, seed=1)(images)), "same seed, same augmentation"


def test_disabled_augmentation_is_identity(images: np.ndarray):
    augmenter = Augmenter(build_augmentation(AugmentConfig(enabled=False)), seed=1)
    assert not augmenter.active
    assert np.array_equal(augmenter(images), images)


def test_erasing_is_serialized_when_enabled():
    spec = build_augmentation(AugmentConfig(erase_p=0.5))
    names = [t["__class_fullname__"] for t in spec["transform"]["transforms"]]
    assert names == ["Affine", "CoarseDropout"]


def test_dataset_carries_the_configured_augmentation(mnist_slice):
    spec = json.loads((mnist_slice / AUGMENT).read_text())
    affine = spec["transform"]["transforms"][0]
    assert affine["__class_fullname__"] == "Affine"
    assert affine["rotate"] == [-AugmentConfig().rotate, AugmentConfig().rotate]


def test_only_training_batches_are_augmented(mnist_slice):
    dm = DigitDataModule.from_dataset(load_dataset(mnist_slice), batch_size=64, seed=0)
    train_loader, val_loader = dm.train_dataloader(), dm.val_dataloader()
    assert train_loader.dataset.augmenter is not None  # type: ignore[attr-defined]
    assert val_loader.dataset.augmenter is None  # type: ignore[attr-defined]

    x, y = next(iter(train_loader))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    assert 0 <= x.min() <= x.max() <= 1 and y.shape == (64,)

    split = load_dataset(mnist_slice).split("train")
    indices = list(range(64))
    augmented, _ = BatchedSplit(split, Augmenter(dm.augment_spec or {}, seed=0))[indices]
    plain, _ = BatchedSplit(split)[indices]
    changed = (augmented != plain).flatten(1).any(1).float().mean()
    assert changed > 0.5, "most training images are transformed (p=0.9)"
    assert torch.equal(plain[:, 0], torch.from_numpy(split.images[:64]).float().div(255))
