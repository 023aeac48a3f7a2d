"""Training-time augmentation with Albumentations.

`prepare` builds the pipeline from `AugmentConfig` and serialises it to `augment.json`; training
deserialises that file, so the dataset directory says exactly which augmentation a model saw.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from digitops.config import AugmentConfig

# The erased patch spans this range of pixels on a 28×28 digit: big enough to hide a stroke.
_ERASE_SIZE = (4, 8)


def build_augmentation(cfg: AugmentConfig) -> dict[str, Any]:
    """The serialised Albumentations pipeline for `cfg` (an empty pipeline when disabled)."""
    import albumentations as A
    import cv2

    transforms: list[Any] = []
    if cfg.enabled:
        transforms.append(
            A.Affine(
                rotate=(-cfg.rotate, cfg.rotate),
                translate_percent=(-cfg.shift, cfg.shift),
                scale=(1 - cfg.scale, 1 + cfg.scale),
                shear=(-cfg.shear, cfg.shear),
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                p=cfg.p,
            )
        )
        if cfg.erase_p > 0:
            transforms.append(
                A.CoarseDropout(
                    num_holes_range=(1, 1),
                    hole_height_range=_ERASE_SIZE,
                    hole_width_range=_ERASE_SIZE,
                    fill=0,
                    p=cfg.erase_p,
                )
            )
    return dict(A.to_dict(A.Compose(transforms)))


class Augmenter:
    """Applies a serialised pipeline to batches of uint8 images, reproducibly from a seed."""

    def __init__(self, spec: dict[str, Any], seed: int) -> None:
        import albumentations as A

        self._compose = A.from_dict(spec)
        self._compose.set_random_seed(seed)
        self.active = len(self._compose.transforms) > 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Augment each image of an N×H×W uint8 batch independently."""
        if not self.active:
            return images
        return np.stack([self._compose(image=img)["image"] for img in images])
