"""Writers of small real inputs in the formats users bring (CSV, image folders)."""

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def write_sign_csv(path: Path, images: np.ndarray, labels: list[int]) -> None:
    """A CSV in the Sign Language MNIST layout: `label`, then pixel1..pixel784."""
    frame = pd.DataFrame(
        images.reshape(len(images), -1), columns=[f"pixel{i + 1}" for i in range(784)]
    )
    frame.insert(0, "label", labels)
    frame.to_csv(path, index=False)


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """root/<label>/<i>.png, saved as larger RGB files so the reader must convert and resize."""
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).convert("RGB").resize((56, 56)).save(root / str(label) / f"{i}.png")


def rotated(images: np.ndarray, degrees: float) -> np.ndarray:
    """Each digit rotated about the image centre (the background fills the corners)."""
    import cv2

    matrix = cv2.getRotationMatrix2D((13.5, 13.5), degrees, 1.0)
    return np.stack([cv2.warpAffine(img, matrix, (28, 28)) for img in images])


def inverted(images: np.ndarray) -> np.ndarray:
    """Dark ink on a light page instead of MNIST's light ink on black."""
    return 255 - images


def noisy(images: np.ndarray, sigma: float = 0.3, seed: int = 0) -> np.ndarray:
    """Heavy Gaussian pixel noise (sigma as a share of the full intensity range)."""
    noise = np.random.default_rng(seed).normal(0, sigma * 255, images.shape)
    return np.clip(images + noise, 0, 255).astype(np.uint8)


def thickened(images: np.ndarray) -> np.ndarray:
    """Strokes dilated by a 3×3 kernel: a broader pen."""
    import cv2

    kernel = np.ones((3, 3), np.uint8)
    return np.stack([cv2.dilate(img, kernel) for img in images])
