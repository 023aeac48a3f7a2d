"""Stage `prepare`: read a source, split it deterministically, write the dataset directory."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitops.config import Config
from digitops.data.augment import build_augmentation
from digitops.data.dataset import Split, write_dataset
from digitops.data.sources import load_source
from digitops.errors import DataError
from digitops.results import StageResult, metric


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
    if len(np.unique(train.labels)) < 2:
        raise DataError(f"{cfg.source}: the training split holds fewer than two classes")

    manifest = write_dataset(
        out_dir,
        splits,
        raw.class_names,
        build_augmentation(config.augment),
        source={
            "source": raw.description,
            "limit": cfg.limit,
            "seed": cfg.seed,
            "val_fraction": cfg.val_fraction,
        },
    )
    return PrepareResult(out_dir, manifest["version"], manifest["sizes"], raw.class_names)


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
