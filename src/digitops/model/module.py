"""The LightningModule: AdamW with a one-cycle schedule, torchmetrics accuracy.

Hyper-parameters are saved with the checkpoint, so `DigitClassifier.load_from_checkpoint`
rebuilds the exact network.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy

from digitops.config import ModelConfig, TrainConfig
from digitops.model.cnn import DigitCNN


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
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams["label_smoothing"])
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
