"""A production stream the MNIST model was not trained for: printed digits, photographed.

Digits rendered from the DejaVu faces this machine has (sans, serif, mono; book, bold, oblique,
condensed, extra-light) at random sizes, tilts (±12°), positions, ink and paper shades, in a
form's box or on a ruled line for half of them, blurred, and saved as JPEG: what a phone photo
of a filled-in form sends to `/predict`. MNIST digits are handwritten; printed ones are a real
shift (a model trained on MNIST alone reads them at about 80-90 %). The active-learning and
closed-loop benchmarks and the closed-loop test draw their shifted traffic from here.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from digitops.errors import DataError

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
CANVAS = 160  # pixels of the photographed square
BOXED, UNDERLINED = 0.25, 0.25  # shares of digits in a form box, on a ruled line


def fonts() -> list[Path]:
    found = sorted(FONT_DIR.glob("DejaVu*.ttf"))
    if not found:
        raise DataError(f"{FONT_DIR}: no DejaVu fonts (Debian: apt-get install fonts-dejavu-core)")
    return found


def photographs(count: int, seed: int) -> tuple[list[bytes], np.ndarray]:
    """`count` JPEG photos of printed digits and their digits (0-9), the same for a seed.
    A few fall partly off the page; the service may refuse those, as it would a real photo."""
    rng = np.random.default_rng(seed)
    faces = fonts()
    photos, labels = [], []
    for _ in range(count):
        digit = int(rng.integers(10))
        photos.append(photograph(rng, faces, digit))
        labels.append(digit)
    return photos, np.asarray(labels, dtype=np.int64)


def photograph(rng: np.random.Generator, faces: list[Path], digit: int) -> bytes:
    """One JPEG photo of `digit`, drawn with `rng`."""
    font = ImageFont.truetype(str(faces[rng.integers(len(faces))]), int(rng.integers(60, 110)))
    page = Image.new("L", (CANVAS, CANVAS), int(rng.integers(215, 256)))
    ink = int(rng.integers(0, 80))
    x, y = (int(v) for v in rng.integers(20, 60, size=2))
    draw = ImageDraw.Draw(page)
    draw.text((x, y), str(digit), fill=ink, font=font)
    left, top, right, bottom = draw.textbbox((x, y), str(digit), font=font)
    style, pad = rng.random(), int(rng.integers(3, 10))
    if style < BOXED:  # a form's box around the digit
        box = (left - pad, top - pad, right + pad, bottom + pad)
        draw.rectangle(box, outline=ink, width=int(rng.integers(1, 4)))
    elif style < BOXED + UNDERLINED:  # the line the digit was written on
        line = (left - 2 * pad, bottom + pad, right + 2 * pad, bottom + pad)
        draw.line(line, fill=ink, width=int(rng.integers(1, 4)))
    page = page.rotate(float(rng.uniform(-12, 12)), fillcolor=int(np.asarray(page)[0, 0]))
    page = page.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.5))))
    encoded = io.BytesIO()
    page.save(encoded, format="JPEG", quality=int(rng.integers(60, 95)))
    return encoded.getvalue()
