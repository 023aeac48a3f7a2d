"""The LightningModule: AdamW with a one-cycle schedule, torchmetrics accuracy, and outlier
exposure (Hendrycks et al., 2019): each batch also holds images that are no digit (the batch's
digits inverted, uniform grey, noise), whose answer is pushed towards "every digit alike", so the
model learns not to be sure of them (the gate's directional tests).

Hyper-parameters are saved with the checkpoint, so `DigitClassifier.load_from_checkpoint`
rebuilds the exact network.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy

from digitops.config import ModelConfig, TrainConfig
from digitops.model.cnn import DigitCNN

# Each kind of non-digit is a sixteenth of a batch. An eighth cost 0.14 point of test accuracy
# and a sixth more training time for no gain: both kept every non-digit unsure (docs/pipeline.md).
OUTLIER_DIVISOR = 16


class DigitClassifier(L.LightningModule):
    """Trains `DigitCNN`; logs `train_loss`, `train_accuracy`, `val_loss`, `val_accuracy` and
    `lr` every epoch."""

    def __init__(
        self,
        num_classes: int,
        width: int,
        dropout: float,
        lr: float,
        weight_decay: float,
        label_smoothing: float,
        mean: float,
        std: float,
        outlier_exposure: float = 0.0,  # checkpoints from before it trained without
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = DigitCNN(num_classes, width, dropout, mean, std)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")

    @classmethod
    def from_config(
        cls, model: ModelConfig, train: TrainConfig, num_classes: int, stats: dict[str, float]
    ) -> DigitClassifier:
        """The module a config describes, normalising with the dataset's `stats`."""
        return cls(
            num_classes=num_classes,
            width=model.width,
            dropout=model.dropout,
            lr=train.lr,
            weight_decay=train.weight_decay,
            label_smoothing=train.label_smoothing,
            mean=stats["mean"],
            std=stats["std"],
            outlier_exposure=train.outlier_exposure,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        weight = self.hparams["outlier_exposure"]
        # One forward pass over digits and non-digits together, as outlier exposure does: batch
        # normalisation sees the same mix in every step, and its running statistics (used at
        # inference) are of that mix. A second pass of non-digits alone swung them so far that
        # validation accuracy fell below 40 %.
        everything = self.net(torch.cat([x, outliers(x)]) if weight else x)
        logits = everything[: len(x)]
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams["label_smoothing"])
        if weight:
            # KL(uniform || p): cross-entropy to the uniform answer less its minimum, log K
            log_p = everything[len(x) :].log_softmax(1)
            uniform = -log_p.mean(1).mean() - math.log(log_p.shape[1])
            self.log("train_outlier_loss", uniform, on_step=False, on_epoch=True)
            loss = loss + weight * uniform
        self.train_acc(logits, y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        self.log("train_accuracy", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.val_acc(logits, y)
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True)
        self.log("val_accuracy", self.val_acc, on_epoch=True, prog_bar=True)

    def on_train_epoch_end(self) -> None:
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"]
        )
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=hp["lr"], total_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def outliers(x: torch.Tensor) -> torch.Tensor:
    """Non-digits for a batch `x` (B×1×28×28 in [0, 1]): a sixteenth as many of each kind, its
    digits inverted, uniform images of random grey and noise of random strength."""
    n = max(1, len(x) // OUTLIER_DIVISOR)
    grey = torch.rand(n, 1, 1, 1, device=x.device).expand(n, *x.shape[1:])
    noise = torch.rand(n, *x.shape[1:], device=x.device) * torch.rand(n, 1, 1, 1, device=x.device)
    return torch.cat([1.0 - x[:n], grey, noise])
