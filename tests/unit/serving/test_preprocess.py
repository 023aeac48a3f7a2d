"""Images as users send them become MNIST-like 28×28 inputs; bad bytes are clear 4xx errors."""

import io

import numpy as np
import pytest
from PIL import Image

from digitops.serving.preprocess import ImageError, preprocess


def digit_one(width: int = 90, height: int = 120, dark_ink: bool = True) -> Image.Image:
    """A thick upright stroke, off-centre, on a page of any size."""
    page = np.full((height, width), 255 if dark_ink else 0, dtype=np.uint8)
    page[height // 5 : height - height // 6, width // 3 : width // 3 + width // 9] = (
        0 if dark_ink else 255
    )
    return Image.fromarray(page)


def encode(image: Image.Image, fmt: str, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, fmt)
    return buffer.getvalue()


def assert_mnist_like(x: np.ndarray) -> None:
    assert x.shape == (28, 28) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.9
    assert x[0].max() == 0 and x[:, 0].max() == 0, "the page must be black after inversion"
    ys, xs = np.indices(x.shape)
    centre = ((ys * x).sum() / x.sum(), (xs * x).sum() / x.sum())
    assert np.allclose(centre, 13.5, atol=1.0), centre
    rows = np.flatnonzero((x > 0.2).any(axis=1))
    assert 18 <= rows[-1] - rows[0] + 1 <= 21, "the longer side is scaled to 20 px"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "WEBP"])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_formats_and_modes(fmt: str, mode: str):
    assert_mnist_like(preprocess(encode(digit_one(), fmt, mode)))


def test_transparent_drawing_on_no_background():
    # A canvas export: black strokes, fully transparent everywhere else.
    rgba = np.zeros((100, 100, 4), dtype=np.uint8)
    rgba[20:80, 45:55] = (0, 0, 0, 255)
    assert_mnist_like(preprocess(encode(Image.fromarray(rgba, "RGBA"), "PNG", "RGBA")))


def test_light_ink_and_dark_ink_give_the_same_input():
    dark_on_light = preprocess(encode(digit_one(dark_ink=True), "PNG"))
    light_on_dark = preprocess(encode(digit_one(dark_ink=False), "PNG"))
    assert np.abs(dark_on_light - light_on_dark).max() < 1e-6


def test_any_size_gives_the_same_input():
    small = preprocess(encode(digit_one(45, 60), "PNG"))
    large = preprocess(encode(digit_one(900, 1200), "PNG"))
    assert np.abs(small - large).mean() < 0.05


def test_blank_page_is_an_empty_input_not_an_error():
    blank = Image.new("L", (50, 50), 255)
    assert preprocess(encode(blank, "PNG")).max() == 0


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 422, "empty"),
        (b"GIF89a not really", 422, "not an image in a supported format"),
        (b"%PDF-1.7 a document", 422, "not an image in a supported format"),
        (encode(digit_one(), "PNG")[:60], 422, "truncated or corrupt"),
    ],
    ids=["empty", "gif-header", "pdf", "truncated-png"],
)
def test_bad_bytes_are_clear_errors(data: bytes, status: int, message: str):
    with pytest.raises(ImageError, match=message) as error:
        preprocess(data)
    assert error.value.status == status


def test_100_megapixel_image_is_refused_before_decoding():
    huge = encode(Image.new("L", (10_000, 10_000), 255), "PNG")
    with pytest.raises(ImageError, match="100 megapixels") as error:
        preprocess(huge)
    assert error.value.status == 413
