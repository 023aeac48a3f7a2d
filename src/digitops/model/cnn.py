"""The digit classifier: a small fully-convolutional CNN (no dense layers).

Input: N×1×28×28 floats in [0, 1]; normalisation is part of the network, so the ONNX model
takes raw scaled pixels and the service needs no dataset statistics.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(c_in: int, c_out: int, padding: int) -> list[nn.Module]:
    """3×3 convolution, batch norm, ReLU (the conv has no bias: batch norm supplies it)."""
    return [
        nn.Conv2d(c_in, c_out, 3, padding=padding, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class DigitCNN(nn.Module):
    """Three stages at 28, 14 and 7 px, global average pooling, a 1×1 conv classifier.

    Channels grow w → 2w → 4w; at the default width of 8 that is about 20k parameters.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        width: int = 8,
        dropout: float = 0.0,
        mean: float = 0.0,
        std: float = 1.0,
    ) -> None:
        super().__init__()
        w = width
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.features = nn.Sequential(
            *conv_bn_relu(1, w, padding=1),
            *conv_bn_relu(w, 2 * w, padding=1),
            nn.MaxPool2d(2),
            *conv_bn_relu(2 * w, 2 * w, padding=1),
            *conv_bn_relu(2 * w, 2 * w, padding=1),
            nn.MaxPool2d(2),
            *conv_bn_relu(2 * w, 4 * w, padding=0),
            *conv_bn_relu(4 * w, 4 * w, padding=0),
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Dropout(dropout),
            nn.Conv2d(4 * w, num_classes, 1),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N×classes) for images scaled to [0, 1]."""
        return self.head(self.features((x - self.mean) / self.std))

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the penultimate layer (the pooled features, N×4w): the embedding the
        request store keeps for drift and active learning."""
        pooled = self.head[0](self.features((x - self.mean) / self.std))
        return self.head[1:](pooled), pooled.flatten(1)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameters_at(width: int, num_classes: int) -> int:
    """Trainable parameters of a `DigitCNN` of `width` for `num_classes` (what a search bounds)."""
    return count_parameters(DigitCNN(num_classes, width))
