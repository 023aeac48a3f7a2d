"""Lightning callbacks digitops adds to training: one progress line per epoch."""

from __future__ import annotations

import time
from typing import Any

import lightning as L

from digitops.progress import duration, report


class EpochProgress(L.Callback):
    """After each epoch: loss, validation accuracy, time per epoch and an estimate of what is
    left (of `max_epochs`: early stopping may end sooner)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        metrics = trainer.callback_metrics
        epoch, last = trainer.current_epoch + 1, trainer.max_epochs or 0
        per_epoch = (time.perf_counter() - self.started) / epoch
        scores = ", ".join(
            f"{name} {float(metrics[name]):.4f}"
            for name in ("train_loss", "val_accuracy")
            if name in metrics
        )
        left = f", about {duration(per_epoch * (last - epoch))} left" if last > epoch else ""
        report(f"epoch {epoch}/{last}: {scores}, {per_epoch:.0f} s/epoch{left}")
