"""Per-image descriptors: the tabular view of digits that drift detection compares.

Vectorised numpy over N×28×28 uint8 batches (light ink on a dark background, as in a dataset
directory); the serving request log stores the same descriptors for every prediction.
"""

from __future__ import annotations

import numpy as np

INK = 128  # a pixel at or above this is ink
FAINT = (25, 128)  # faint grey: neither background nor ink (noise, blur, anti-aliasing)
BORDER = 2  # width of the frame whose brightness reveals inverted or uncropped images

COLUMNS = (
    "mean_intensity",
    "contrast",
    "ink_fraction",
    "faint_fraction",
    "border_intensity",
    "bbox_width",
    "bbox_height",
    "bbox_aspect",
    "centroid_x",
    "centroid_y",
    "stroke_thickness",
)


def describe(images: np.ndarray) -> dict[str, np.ndarray]:
    """One value per image for each name in `COLUMNS`."""
    x = images.astype(np.float32) / 255.0
    ink = images >= INK
    _, height, width = images.shape
    rows = np.asarray(ink.any(axis=2))
    cols = np.asarray(ink.any(axis=1))
    bbox_height = _extent(rows, height)
    bbox_width = _extent(cols, width)
    mass = x.sum(axis=(1, 2))
    safe_mass = np.where(mass > 0, mass, 1.0)
    ys, xs = np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32)
    frame = np.ones((height, width), dtype=bool)
    frame[BORDER:-BORDER, BORDER:-BORDER] = False
    ink_area = ink.sum(axis=(1, 2))
    return {
        "mean_intensity": x.mean(axis=(1, 2)),
        "contrast": x.std(axis=(1, 2)),
        "ink_fraction": ink_area / (height * width),
        "faint_fraction": ((images >= FAINT[0]) & (images < FAINT[1])).mean(axis=(1, 2)),
        "border_intensity": x[:, frame].mean(axis=1),
        "bbox_width": bbox_width,
        "bbox_height": bbox_height,
        "bbox_aspect": bbox_width / np.maximum(bbox_height, 1),
        "centroid_x": (x.sum(axis=1) @ xs) / safe_mass,
        "centroid_y": (x.sum(axis=2) @ ys) / safe_mass,
        "stroke_thickness": 2 * ink_area / np.maximum(_boundary(ink), 1),
    }


def _extent(occupied: np.ndarray, size: int) -> np.ndarray:
    """Length of the span from the first to the last occupied row (or column); 0 if none."""
    first = occupied.argmax(axis=1)
    last = size - 1 - occupied[:, ::-1].argmax(axis=1)
    return np.where(occupied.any(axis=1), last - first + 1, 0).astype(np.float32)


def _boundary(ink: np.ndarray) -> np.ndarray:
    """Ink pixels with a background 4-neighbour: about twice the stroke length for any width."""
    padded = np.pad(ink, ((0, 0), (1, 1), (1, 1)))
    inner = padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    count: np.ndarray = (ink & ~inner).sum(axis=(1, 2))
    return count
