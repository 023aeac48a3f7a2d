"""Explanations served: occlusion attribution with the ONNX model, no torch (`POST /explain`).

Occlusion as Captum computes it (`captum.attr.Occlusion`, the settings of the `explain` stage:
a 4×4 window, stride 2, baseline 0 on the image in [0, 1]): each window position is blanked in
turn, the drop of the explained class's logit is added to every pixel of the window, and each
pixel's sum is divided by the number of windows that covered it. All 169 blanked copies go
through the model in one batched forward pass, so an explanation costs about one batch
prediction. The map comes back as numbers and as a PNG overlay of the digit (red: evidence for
the class, blue: against).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from digitops.model.artifact import OnnxClassifier

WINDOW = 4  # pixels of the blanked square (the explain stage's `occlusion_window`)
STRIDE = 2  # its step (`occlusion_stride`)
BASELINE = 0.0  # what a blanked pixel becomes: the background
OVERLAY_SCALE = 8  # the overlay is 224×224


@dataclass(frozen=True)
class Explanation:
    target: int  # the class index explained
    attribution: np.ndarray  # 28×28, logit units


def windows(size: int, window: int = WINDOW, stride: int = STRIDE) -> list[int]:
    """Start offsets of the window along one side, as Captum places them."""
    if size < window:
        return [0]
    count = -(-(size - window) // stride) + 1  # ceil: the last window reaches the edge
    return [min(i * stride, size - window) for i in range(count)]


def occlusion(
    classifier: OnnxClassifier, image: np.ndarray, target: int | None = None
) -> Explanation:
    """The occlusion map of one 28×28 image in [0, 1] for `target` (default: the predicted
    class)."""
    height, width = image.shape
    spots = [(y, x) for y in windows(height) for x in windows(width)]
    batch = np.repeat(image[None].astype(np.float32), len(spots) + 1, axis=0)
    for k, (y, x) in enumerate(spots, start=1):
        batch[k, y : y + WINDOW, x : x + WINDOW] = BASELINE
    logits = classifier.logits(batch)
    chosen = int(logits[0].argmax()) if target is None else target
    drops = logits[0, chosen] - logits[1:, chosen]
    total = np.zeros((height, width), np.float64)
    covered = np.zeros((height, width), np.float64)
    for drop, (y, x) in zip(drops, spots, strict=True):
        total[y : y + WINDOW, x : x + WINDOW] += drop
        covered[y : y + WINDOW, x : x + WINDOW] += 1
    return Explanation(chosen, (total / np.maximum(covered, 1)).astype(np.float32))


def overlay_png(image: np.ndarray, attribution: np.ndarray) -> bytes:
    """The digit in gray with the attribution over it (red for, blue against), as a PNG."""
    scale = float(np.abs(attribution).max()) or 1.0
    strength = np.clip(attribution / scale, -1.0, 1.0)
    gray = np.repeat((255 - image * 255)[..., None], 3, axis=2)  # dark ink on white
    toward_red = (0.7 * np.clip(strength, 0, 1))[..., None]
    toward_blue = (0.7 * np.clip(-strength, 0, 1))[..., None]
    rgb = gray * (1 - toward_red - toward_blue)
    rgb += toward_red * np.array([255, 0, 0]) + toward_blue * np.array([0, 0, 255])
    picture = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    side = image.shape[0] * OVERLAY_SCALE
    picture = picture.resize((side, side), Image.Resampling.NEAREST)
    encoded = io.BytesIO()
    picture.save(encoded, "PNG")
    return encoded.getvalue()
