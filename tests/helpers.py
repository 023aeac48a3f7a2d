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
