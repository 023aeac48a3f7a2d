"""Stage `prepare`: read a source, split it deterministically, write the dataset directory."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitops.config import Config
from digitops.data.augment import build_augmentation
from digitops.data.dataset import RECORDS, Split, write_dataset
from digitops.data.sources import RawData, label_order, load_source
from digitops.errors import DataError
from digitops.results import StageResult, metric
from digitops.store.layout import image_hash


@dataclass(frozen=True)
class PrepareResult(StageResult):
    """What `prepare` made: where, which version, how many images per split."""

    title = "prepared dataset"
    dataset_dir: Path
    version: str
    images: dict[str, int] = metric()  # per split: `train_images`, `val_images`, `test_images`
    class_names: list[str] = dataclasses.field(default_factory=list)


def run(config: Config, out_dir: Path) -> PrepareResult:
    """Build the dataset directory `out_dir` from `config.prepare`."""
    cfg = config.prepare
    raw = load_source(cfg.source, cfg.test_source, cfg.label_column, cfg.classes)
    if cfg.mnist_ratio and raw.provenance is None:
        raise DataError(
            f"{cfg.source}: prepare.mnist_ratio mixes MNIST into production data; "
            "the source is not a request store"
        )
    rng = np.random.default_rng(cfg.seed)

    pool = _subset(raw.train_images, raw.train_labels, cfg.limit, rng)
    if raw.test_images is not None and raw.test_labels is not None:
        test = _subset(raw.test_images, raw.test_labels, cfg.limit, rng)
    else:
        test, pool = _split_off(pool, cfg.test_fraction, rng)
    val, train = _split_off(pool, cfg.val_fraction, rng)
    splits = {"train": train, "val": val, "test": test}
    for name, split in splits.items():
        if len(split) == 0:
            raise DataError(
                f"{cfg.source}: the {name} split is empty — use more data or a larger limit"
            )
    class_names = raw.class_names
    source: dict[str, Any] = {
        "source": raw.description,
        "limit": cfg.limit,
        "seed": cfg.seed,
        "val_fraction": cfg.val_fraction,
    }
    extra = {}
    if raw.provenance is not None:  # production data: name every request that went in
        records = _records(splits, class_names, raw.provenance)
        if cfg.mnist_ratio:
            splits, class_names = _mix_mnist(splits, class_names, cfg.mnist_ratio, rng)
        extra[RECORDS] = records
        source |= {
            "store": cfg.source,
            "production_images": len(records),
            "mnist_ratio": cfg.mnist_ratio,
            "records": RECORDS,
        }
    if len(np.unique(splits["train"].labels)) < 2:
        raise DataError(f"{cfg.source}: the training split holds fewer than two classes")

    manifest = write_dataset(
        out_dir, splits, class_names, build_augmentation(config.augment), source, extra
    )
    return PrepareResult(out_dir, manifest["version"], manifest["sizes"], class_names)


def _records(
    splits: dict[str, Split], class_names: list[str], provenance: dict[str, str]
) -> list[dict[str, Any]]:
    """The production requests in each split: request id, image hash, label."""
    return [
        {
            "request_id": provenance[digest],
            "image": digest,
            "label": class_names[int(label)],
            "split": name,
        }
        for name, split in splits.items()
        for image, label in zip(split.images, split.labels, strict=True)
        if (digest := image_hash(image)) in provenance
    ]


def _mix_mnist(
    splits: dict[str, Split], class_names: list[str], ratio: float, rng: np.random.Generator
) -> tuple[dict[str, Split], list[str]]:
    """Add `ratio` MNIST images per production image to each split: train and val from MNIST's
    training images (never the same one twice), test from MNIST's test images."""
    mnist: RawData = load_source("mnist", None, "label", None)
    names = sorted(set(class_names) | set(mnist.class_names), key=label_order)
    index = np.array([names.index(n) for n in class_names], dtype=np.int64)
    mnist_index = np.array([names.index(n) for n in mnist.class_names], dtype=np.int64)
    assert mnist.test_images is not None and mnist.test_labels is not None
    pools = {"train": (mnist.train_images, mnist.train_labels)}
    pools["test"] = (mnist.test_images, mnist.test_labels)
    # A production image that is also an MNIST image must not come back in another split.
    seen = {image_hash(image) for split in splits.values() for image in split.images}
    order = {
        key: np.array(
            [i for i in rng.permutation(len(labels)) if image_hash(images[i]) not in seen]
        )
        for key, (images, labels) in pools.items()
    }
    taken = {"train": 0, "test": 0}
    mixed = {}
    for name, split in splits.items():
        key = "test" if name == "test" else "train"
        images, labels = pools[key]
        n = min(round(ratio * len(split)), len(order[key]) - taken[key])
        pick = np.sort(order[key][taken[key] : taken[key] + n])
        taken[key] += n
        mixed[name] = Split(
            np.concatenate([split.images, images[pick]]),
            np.concatenate([index[split.labels], mnist_index[labels[pick]]]),
        )
    return mixed, names


def _subset(images: np.ndarray, labels: np.ndarray, limit: int, rng: np.random.Generator) -> Split:
    if limit == 0 or limit >= len(labels):  # 0: all
        return Split(images, labels)
    keep = np.sort(rng.choice(len(labels), size=limit, replace=False))
    return Split(images[keep], labels[keep])


def _split_off(split: Split, fraction: float, rng: np.random.Generator) -> tuple[Split, Split]:
    """A random `fraction` of `split` and the rest, each in original order."""
    order = rng.permutation(len(split))
    n = round(len(split) * fraction)
    taken, rest = np.sort(order[:n]), np.sort(order[n:])
    return (
        Split(split.images[taken], split.labels[taken]),
        Split(split.images[rest], split.labels[rest]),
    )
