"""The Lightning DataModule over the splits of a dataset directory (or a subset of them).

Batches are fetched whole (one `__getitem__` per batch of indices), augmented on the fly for the
training split only, and scaled to [0, 1]; normalisation happens inside the model.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from digitops.data.augment import Augmenter
from digitops.data.dataset import Dataset, Split


class BatchedSplit(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A split served one batch at a time: `ds[list_of_indices] -> (images, labels)`."""

    def __init__(self, split: Split, augmenter: Augmenter | None = None) -> None:
        self.images = split.images
        self.labels = torch.from_numpy(split.labels)
        self.augmenter = augmenter

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        images = self.images[indices]
        if self.augmenter is not None:
            images = self.augmenter(images)
        x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).float().div_(255.0)
        return x, self.labels[indices]


def batch_loader(
    split: BatchedSplit, batch_size: int, shuffle: bool, seed: int = 0
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    """A DataLoader that yields whole batches from a `BatchedSplit`."""
    generator = torch.Generator().manual_seed(seed)
    base = RandomSampler(split, generator=generator) if shuffle else SequentialSampler(split)
    return DataLoader(
        split,
        sampler=BatchSampler(base, batch_size, drop_last=False),
        batch_size=None,
    )


class DigitDataModule(L.LightningDataModule):
    """Train/val(/test) loaders over in-memory splits; only the training split is augmented."""

    def __init__(
        self,
        train: Split,
        val: Split,
        batch_size: int,
        seed: int,
        augment_spec: dict[str, Any] | None = None,
        test: Split | None = None,
    ) -> None:
        super().__init__()
        self.splits: dict[str, Split | None] = {"train": train, "val": val, "test": test}
        self.batch_size = batch_size
        self.seed = seed
        self.augment_spec = augment_spec

    @classmethod
    def from_dataset(
        cls,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        augment_spec: dict[str, Any] | None = None,
    ) -> DigitDataModule:
        """Loaders of a dataset directory, augmented as `augment.json` says unless overridden."""
        return cls(
            dataset.split("train"),
            dataset.split("val"),
            batch_size,
            seed,
            augment_spec if augment_spec is not None else dataset.augment_spec,
            test=dataset.split("test"),
        )

    def train_dataloader(self) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
        augmenter = Augmenter(self.augment_spec, self.seed) if self.augment_spec else None
        split = BatchedSplit(self._split("train"), augmenter)
        return batch_loader(split, self.batch_size, shuffle=True, seed=self.seed)

    def val_dataloader(self) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
        return self._eval_loader("test")

    def _eval_loader(self, name: str) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
        return batch_loader(BatchedSplit(self._split(name)), self.batch_size * 4, shuffle=False)

    def _split(self, name: str) -> Split:
        split = self.splits[name]
        if split is None:
            raise ValueError(f"this data module has no {name} split")
        return split
