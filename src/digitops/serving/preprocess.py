"""Images as users send them → the model's input, normalised the way MNIST was made.

Any size; PNG, JPEG, BMP or WebP; grayscale, RGB or RGBA; dark ink on a light page or light ink
on a dark one. Steps: decode (refusing oversized images before their pixels are read), flatten
transparency onto the page, invert when the page is light, crop to the ink, scale the longer side
to 20 px, pad to 28×28 and centre by centre of mass. numpy and Pillow only.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from digitops.errors import DigitopsError

FORMATS = ("PNG", "JPEG", "BMP", "WEBP")
MAX_PIXELS = 25_000_000  # 25 megapixels: a phone photo fits, a 100-megapixel scan does not
SIZE, INNER = 28, 20  # MNIST: the digit's longer side is 20 px inside a 28×28 frame
INK_LEVEL = 0.2  # after inversion, pixels above this (of 1.0) count as ink when cropping


class ImageError(DigitopsError):
    """The bytes are not an image this service accepts (the HTTP layer answers 4xx)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def load_image(data: bytes) -> np.ndarray:
    """Decode `data` into a 2-D float32 gray image in [0, 1] (0 = black), transparency flattened
    onto a white page."""
    if not data:
        raise ImageError("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Our own limit below answers 413; Pillow's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise ImageError(
                f"the image is {width}×{height} ({width * height / 1e6:.0f} megapixels); "
                f"the limit is {MAX_PIXELS / 1e6:.0f} megapixels",
                status=413,
            )
        image.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise ImageError(f"not an image in a supported format ({', '.join(FORMATS)})") from None
    except (OSError, SyntaxError, ValueError):
        raise ImageError("the image is truncated or corrupt") from None
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        page = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(page, image.convert("RGBA"))
    gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return gray


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """A 28×28 float32 image, light ink on black, digit scaled to 20 px and centred by mass."""
    ink = gray if _dark_page(gray) else 1.0 - gray
    ink = np.clip((ink - ink.min()) / max(float(ink.max() - ink.min()), 1e-6), 0, 1)
    rows = np.flatnonzero((ink > INK_LEVEL).any(axis=1))
    cols = np.flatnonzero((ink > INK_LEVEL).any(axis=0))
    if rows.size == 0:
        return np.zeros((SIZE, SIZE), dtype=np.float32)  # a blank page: nothing to centre
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = INNER / max(crop.shape)
    height = max(1, round(crop.shape[0] * scale))
    width = max(1, round(crop.shape[1] * scale))
    resized = Image.fromarray((crop * 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.LANCZOS
    )
    digit = np.asarray(resized, dtype=np.float32) / 255.0
    canvas = np.zeros((SIZE, SIZE), dtype=np.float32)
    top, left = (SIZE - height) // 2, (SIZE - width) // 2
    canvas[top : top + height, left : left + width] = digit
    return _centre_of_mass(canvas)


def preprocess(data: bytes) -> np.ndarray:
    """Bytes of an uploaded image → the model's 28×28 float32 input."""
    return to_mnist(load_image(data))


def _dark_page(gray: np.ndarray) -> bool:
    """Whether the background is dark: the border pixels are mostly darker than mid-gray."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.median(border)) < 0.5


def _centre_of_mass(canvas: np.ndarray) -> np.ndarray:
    total = float(canvas.sum())
    if total == 0:
        return canvas
    ys, xs = np.indices(canvas.shape)
    dy = round((SIZE - 1) / 2 - float((ys * canvas).sum()) / total)
    dx = round((SIZE - 1) / 2 - float((xs * canvas).sum()) / total)
    shifted = np.zeros_like(canvas)
    src_y = slice(max(0, -dy), SIZE - max(0, dy))
    src_x = slice(max(0, -dx), SIZE - max(0, dx))
    dst_y = slice(max(0, dy), SIZE - max(0, -dy))
    dst_x = slice(max(0, dx), SIZE - max(0, -dx))
    shifted[dst_y, dst_x] = canvas[src_y, src_x]
    return shifted
