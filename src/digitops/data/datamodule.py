"""The Lightning DataModule over a dataset directory.

Batches are fetched whole (one `__getitem__` per batch of indices), augmented on the fly for the
training split only, and scaled to [0, 1]; normalisation happens inside the model.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from digitops.data.augment import Augmenter
from digitops.data.dataset import Dataset, Split, load_dataset


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
    """Train/val/test loaders of one dataset directory."""

    def __init__(
        self,
        data_dir: Path,
        batch_size: int,
        seed: int,
        augment: bool = True,
        dataset: Dataset | None = None,
    ) -> None:
        super().__init__()
        self.dataset = dataset or load_dataset(data_dir)
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment

    def train_dataloader(self) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
        augmenter = Augmenter(self.dataset.augment_spec, self.seed) if self.augment else None
        split = BatchedSplit(self.dataset.split("train"), augmenter)
        return batch_loader(split, self.batch_size, shuffle=True, seed=self.seed)

    def val_dataloader(self) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
        return batch_loader(
            BatchedSplit(self.dataset.split("val")), self.batch_size * 4, shuffle=False
        )

    def test_dataloader(self) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
        return batch_loader(
            BatchedSplit(self.dataset.split("test")), self.batch_size * 4, shuffle=False
        )
