"""Images as users send them become MNIST-like 28×28 inputs; bad bytes are clear 4xx errors."""

import io

import numpy as np
import pytest
from PIL import Image

from digitops.serving.preprocess import ImageError, NoDigitError, preprocess


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


def sixteen_bit(ink: int, page: int, size: int = 60) -> Image.Image:
    """A 16-bit grayscale stroke (levels 0..65535), as scanners and medical viewers write."""
    pixels = np.full((size, size), page, dtype=np.uint16)
    pixels[size // 6 : size - size // 6, size // 2 - 3 : size // 2 + 3] = ink
    return Image.fromarray(pixels)


@pytest.mark.parametrize(("ink", "page"), [(3_000, 65_535), (60_000, 0), (20_000, 40_000)])
def test_16_bit_images_keep_their_levels(ink: int, page: int):
    # Clipped to 8 bits, every level above 255 is white: the page and a mid-gray stroke vanish.
    x = preprocess(encode(sixteen_bit(ink, page), "PNG", "I;16"))
    assert_mnist_like(x)
    eight_bit = sixteen_bit(ink // 257, page // 257).convert("L")
    assert np.abs(x - preprocess(encode(eight_bit, "PNG"))).max() < 0.05


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (Image.new("L", (50, 50), 255), "blank"),
        (Image.new("L", (400, 300), 0), "blank"),
        (Image.new("L", (1, 1), 0), "1×1 pixels: too small"),
        (Image.new("RGBA", (80, 80), (0, 0, 0, 0)), "blank"),
        (Image.fromarray(np.pad(np.zeros((2, 2), np.uint8), 199, constant_values=255)), "spans"),
    ],
    ids=["white-page", "black-page", "1x1", "all-transparent", "a-speck"],
)
def test_no_digit_is_refused_not_guessed(image: Image.Image, message: str):
    with pytest.raises(NoDigitError, match=message) as error:
        preprocess(encode(image, "PNG", image.mode))
    assert error.value.status == 422


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (200, 30, 30)])
def test_a_drawing_only_in_the_alpha_channel_shows_whatever_its_colour(colour):
    # Canvas exports: the stroke is where alpha is opaque; its colour may be the page's own.
    rgba = np.zeros((100, 100, 4), dtype=np.uint8)
    rgba[..., :3] = colour
    rgba[20:80, 45:55, 3] = 255
    assert_mnist_like(preprocess(encode(Image.fromarray(rgba, "RGBA"), "PNG", "RGBA")))


def test_large_photos_decode_at_reduced_size():
    # A 48-megapixel JPEG (a phone's full resolution) decodes from its DCT at 1/8 size.
    photo = np.full((6000, 8000), 235, dtype=np.uint8)
    photo[1500:4500, 3800:4300] = 20
    assert_mnist_like(preprocess(encode(Image.fromarray(photo), "JPEG")))


def test_a_jpeg_whose_data_ends_early_is_refused():
    # The header claims 4999×4999 but the scan holds 100 rows: Pillow fills the rest with gray.
    stripe = np.full((100, 4999), 255, dtype=np.uint8)
    stripe[20:80, 2000:2100] = 0
    data = bytearray(encode(Image.fromarray(stripe), "JPEG"))
    frame = data.find(b"\xff\xc0")
    data[frame + 5 : frame + 7] = (4999).to_bytes(2, "big")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        preprocess(bytes(data))
    whole = encode(digit_one(600, 800), "JPEG")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        preprocess(whole[: len(whole) // 2])


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


@pytest.mark.parametrize("pixels", [(10_000, 10_000), (20_000, 20_000)], ids=["100MP", "bomb"])
def test_oversized_images_are_413_before_decoding(pixels):
    huge = encode(Image.new("L", pixels, 255), "PNG")
    with pytest.raises(ImageError, match="megapixels") as error:
        preprocess(huge)
    assert error.value.status == 413


def test_header_pixels_reads_the_size_without_decoding():
    from digitops.serving.preprocess import header_pixels

    assert header_pixels(encode(digit_one(90, 120), "PNG")) == 90 * 120
    assert header_pixels(encode(digit_one(90, 120), "JPEG")) == 90 * 120
    bomb = encode(Image.new("L", (20_000, 20_000), 255), "PNG")
    assert header_pixels(bomb) == 20_000 * 20_000  # what it declares; decoding answers 413
    assert header_pixels(b"not an image") is None
