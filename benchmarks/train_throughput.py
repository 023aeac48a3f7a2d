"""Training throughput: Lightning's training step against a plain PyTorch loop.

Both train the same `DigitCNN` with the same optimizer on the same batches of a prepared dataset,
with and without Albumentations augmentation. Prints JSON: images/s of each, and the ratio
Lightning / plain (1.0 = no overhead), with the machine and library versions.

    python benchmarks/train_throughput.py [--images 12800] [--repeats 3] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.nn import functional as F

from digitops.config import load_config
from digitops.data.augment import Augmenter
from digitops.data.datamodule import BatchedSplit, batch_loader
from digitops.data.dataset import load_dataset
from digitops.model.module import DigitClassifier
from digitops.stages import prepare


def make_module(num_classes: int, mean: float, std: float) -> DigitClassifier:
    cfg = load_config()
    torch.manual_seed(0)
    return DigitClassifier(
        num_classes=num_classes,
        width=cfg.model.width,
        dropout=cfg.model.dropout,
        lr=cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
        label_smoothing=cfg.train.label_smoothing,
        mean=mean,
        std=std,
    )


def plain_loop(module: DigitClassifier, loader, epochs: int) -> None:  # type: ignore[no-untyped-def]
    """The baseline: what a hand-written PyTorch loop does per step."""
    optimizer = torch.optim.AdamW(
        module.parameters(), lr=module.hparams["lr"], weight_decay=module.hparams["weight_decay"]
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=module.hparams["lr"], total_steps=epochs * len(loader)
    )
    module.train()
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(module(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


def lightning_fit(module: DigitClassifier, loader, epochs: int, root: Path) -> None:  # type: ignore[no-untyped-def]
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=root,
    )
    trainer.fit(module, train_dataloaders=loader)


def measure(run, images: int, repeats: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        rates.append(images / (time.perf_counter() - started))
    return {
        "images_per_s": round(statistics.median(rates), 1),
        "runs": [round(r, 1) for r in rates],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12800, help="training images per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, help="prepared dataset (default: a MNIST slice)")
    args = parser.parse_args()

    import logging
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data_dir = args.data
        if data_dir is None:
            data_dir = root / "dataset"
            prepare.run(load_config(None, [f"prepare.limit={args.images}"]), data_dir)
        dataset = load_dataset(data_dir)
        split = dataset.split("train")
        batch = load_config().train.batch_size
        k, mean, std = len(dataset.class_names), dataset.stats["mean"], dataset.stats["std"]
        n = len(split)
        results: dict[str, dict[str, object]] = {}
        for setting in ("no_augmentation", "augmentation"):
            augmenter = (
                Augmenter(dataset.augment_spec, seed=0) if setting == "augmentation" else None
            )
            loader = batch_loader(BatchedSplit(split, augmenter), batch, shuffle=True)
            # Warm-up: first-call allocations and oneDNN kernel selection.
            plain_loop(make_module(k, mean, std), loader, 1)
            plain = measure(
                lambda dl=loader: plain_loop(make_module(k, mean, std), dl, 1), n, args.repeats
            )
            lit = measure(
                lambda dl=loader: lightning_fit(make_module(k, mean, std), dl, 1, root),
                n,
                args.repeats,
            )
            results[setting] = {
                "plain_pytorch": plain,
                "lightning": lit,
                "ratio_lightning_over_plain": round(lit["images_per_s"] / plain["images_per_s"], 3),
            }
    report = {
        "benchmark": "train_throughput",
        "images_per_run": n,
        "batch_size": batch,
        "repeats": args.repeats,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": sys.version.split()[0],
        },
        "versions": {
            "torch": torch.__version__,
            "lightning": L.__version__,
            "numpy": np.__version__,
        },
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
