"""Images as users send them → the model's input, normalised the way MNIST was made.

Any size; PNG, JPEG, BMP or WebP; grayscale (8 or 16 bit), RGB or RGBA; dark ink on a light
page or light ink on a dark one. Steps: decode (refusing oversized images before their pixels
are read; JPEG at a reduced size, straight from the DCT), shrink to a working size, flatten
transparency onto a page that contrasts with the ink, invert when the page is light, crop to
the ink, scale the longer side to 20 px, pad to 28×28 and centre by centre of mass. An image
with no digit in it (blank, a few pixels, ink too faint) is refused, never answered with a
guess. numpy, Pillow and simplejpeg only.
"""

from __future__ import annotations

import io
import math
import struct
import warnings

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from digitops.data.sources import sixteen_bit_levels
from digitops.errors import DigitopsError

FORMATS = ("PNG", "JPEG", "BMP", "WEBP")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Decoded pixels cost memory (4 bytes each for RGBA, twice while converting): 16 megapixels keep
# two images in flight within the serving pod's 512 Mi. JPEG decodes at up to 1/8 of its size,
# so a 48-megapixel phone photo costs less than a 1-megapixel PNG.
MAX_PIXELS = 16_000_000
MAX_JPEG_PIXELS = 64_000_000
WORK_SIDE = 512  # longer side an image is shrunk to before the digit is found (cheap, enough)
MIN_SIDE = 8  # an image smaller than 8×8 pixels holds no legible digit
MIN_CONTRAST = 0.15  # ink and page differ by at least this much (of full scale)
MIN_INK_SHARE = 0.05  # the digit spans at least this share of the image's longer side
SIZE, INNER = 28, 20  # MNIST: the digit's longer side is 20 px inside a 28×28 frame
INK_LEVEL = 0.2  # after inversion, pixels above this (of 1.0) count as ink when cropping
_PLACES = np.arange(SIZE, dtype=np.float32)  # row (or column) numbers, for the centre of mass


class ImageError(DigitopsError):
    """The bytes are not an image this service accepts (the HTTP layer answers 4xx)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class NoDigitError(ImageError):
    """The image decodes but holds no digit to read (blank, tiny, or too faint)."""


def load_image(data: bytes) -> np.ndarray:
    """Decode `data` into a 2-D float32 gray image in [0, 1] (0 = black), at most `WORK_SIDE`
    pixels on its longer side, transparency flattened onto a page that contrasts with the ink."""
    if not data:
        raise ImageError("the image is empty (0 bytes)")
    if _is_jpeg(data):
        return _load_jpeg(data)
    return _load_with_pillow(data)


def header_pixels(data: bytes) -> int | None:
    """The pixel count an image's header declares, read without decoding (None: no header a
    decoder accepts; decoding it will say why)."""
    try:
        if _is_jpeg(data):
            width, height = _jpeg_size(data)
            return width * height
        if len(data) >= 24 and data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR":
            # The size is the first thing a PNG says; opening it with Pillow to read it cost a
            # tenth of a request.
            width, height = struct.unpack(">II", data[16:24])
            return int(width * height)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            width, height = Image.open(io.BytesIO(data), formats=FORMATS).size
        return int(width * height)
    except (ImageError, ValueError, OSError, SyntaxError, Image.DecompressionBombError):
        return None


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's header."""
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        raise ImageError("the image is truncated or corrupt") from None
    return int(width), int(height)


def _load_jpeg(data: bytes) -> np.ndarray:
    # simplejpeg (libjpeg-turbo) rather than Pillow: it decodes at 1/2, 1/4 or 1/8 size from the
    # DCT coefficients, and in strict mode refuses data that ends early, which Pillow fills with
    # gray and answers as an image.
    width, height = _jpeg_size(data)
    _check_size(width, height, MAX_JPEG_PIXELS)
    scale = min(1.0, WORK_SIDE / max(width, height))
    try:
        gray = simplejpeg.decode_jpeg(
            data,
            colorspace="GRAY",
            strict=True,
            min_height=math.ceil(height * scale),
            min_width=math.ceil(width * scale),
        )
    except ValueError:
        raise ImageError("the image is truncated or corrupt") from None
    return _shrink(Image.fromarray(gray[:, :, 0]), "L")


def _load_with_pillow(data: bytes) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # Our own limit answers 413 (below); Pillow's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)
        _check_size(*image.size, MAX_PIXELS)
        image.load()
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(
            f"the image is over Pillow's decompression-bomb limit; the limit here is "
            f"{MAX_PIXELS / 1e6:.0f} megapixels",
            status=413,
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"not an image in a supported format ({', '.join(FORMATS)})") from None
    except (OSError, SyntaxError, ValueError):
        raise ImageError("the image is truncated or corrupt") from None
    if (levels := sixteen_bit_levels(image)) is not None:
        return _shrink(Image.fromarray(levels, "F"), "F")
    if image.mode in ("RGBA", "LA", "PA", "La") or "transparency" in image.info:
        return _flatten(_shrink_image(image.convert("LA")))
    return _shrink(image, "L")


def _check_size(width: int, height: int, limit: int) -> None:
    if width * height > limit:
        raise ImageError(
            f"the image is {width}×{height} ({width * height / 1e6:.0f} megapixels); "
            f"the limit is {limit / 1e6:.0f} megapixels",
            status=413,
        )
    if min(width, height) < MIN_SIDE:
        raise NoDigitError(
            f"the image is {width}×{height} pixels: too small to hold a digit "
            f"(at least {MIN_SIDE}×{MIN_SIDE})"
        )


def _shrink_image(image: Image.Image) -> Image.Image:
    """`image` with its longer side at most about `WORK_SIDE` (box-filtered, cheap)."""
    factor = max(image.size) // WORK_SIDE
    return image.reduce(factor) if factor > 1 else image


def _shrink(image: Image.Image, mode: str) -> np.ndarray:
    shrunk = _shrink_image(image if image.mode == mode else image.convert(mode))
    gray = np.asarray(shrunk, dtype=np.float32)
    return gray * (1 / 255) if mode == "L" else gray


def _flatten(image: Image.Image) -> np.ndarray:
    """Luminance with alpha (LA) → gray on a page that contrasts with the ink: black strokes go
    on white, white strokes on black, so a drawing that exists only in the alpha channel shows."""
    levels = np.asarray(image, dtype=np.float32) / 255.0
    luma, alpha = levels[..., 0], levels[..., 1]
    covered = float(alpha.sum())
    ink = float((luma * alpha).sum()) / covered if covered > 0 else 0.0
    page = 0.0 if ink > 0.5 else 1.0
    return alpha * luma + (1.0 - alpha) * page


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """A 28×28 float32 image, light ink on black, digit scaled to 20 px and centred by mass;
    `NoDigitError` when there is no ink to read."""
    low, high = float(gray.min()), float(gray.max())
    if high - low < MIN_CONTRAST:
        raise NoDigitError("no digit found: the image is blank (no ink that stands out)")
    # Ink is what lies more than INK_LEVEL of the way from the page towards the strongest
    # stroke. Only the crop is inverted (on a light page) and stretched to 0-255: whole-image
    # passes cost more than the rest of this function.
    dark = _dark_page(gray)
    threshold = INK_LEVEL * (high - low)
    mask = gray > low + threshold if dark else gray < high - threshold
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    extent = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    if extent < max(4, MIN_INK_SHARE * max(gray.shape)):
        raise NoDigitError(
            f"no digit found: the only ink spans {extent} pixels of a "
            f"{gray.shape[1]}×{gray.shape[0]} image"
        )
    box = gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    crop = (box - low if dark else high - box) * (255 / (high - low))
    scale = INNER / max(crop.shape)
    height = max(1, round(crop.shape[0] * scale))
    width = max(1, round(crop.shape[1] * scale))
    # A crop many times the target is box-reduced first (reducing_gap): Lanczos over a 400-pixel
    # photo crop cost 0.4 ms, and the result differs from pure Lanczos by a level or two.
    resized = Image.fromarray(crop.astype(np.uint8)).resize(
        (width, height), Image.Resampling.LANCZOS, reducing_gap=3.0
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
    """Whether the background is dark: most border pixels are darker than mid-gray (counted, not
    a median: a sort of the border cost a twentieth of a request)."""
    edges = (gray[0], gray[-1], gray[:, 0], gray[:, -1])
    dark = sum(np.count_nonzero(edge < 0.5) for edge in edges)
    return bool(2 * dark > sum(edge.size for edge in edges))


def _centre_of_mass(canvas: np.ndarray) -> np.ndarray:
    by_row = canvas.sum(axis=1)
    total = float(by_row.sum())
    if total == 0:
        return canvas
    dy = round((SIZE - 1) / 2 - float(by_row @ _PLACES) / total)
    dx = round((SIZE - 1) / 2 - float(canvas.sum(axis=0) @ _PLACES) / total)
    shifted = np.zeros_like(canvas)
    src_y = slice(max(0, -dy), SIZE - max(0, dy))
    src_x = slice(max(0, -dx), SIZE - max(0, dx))
    dst_y = slice(max(0, dy), SIZE - max(0, -dy))
    dst_x = slice(max(0, dx), SIZE - max(0, -dx))
    shifted[dst_y, dst_x] = canvas[src_y, src_x]
    return shifted
