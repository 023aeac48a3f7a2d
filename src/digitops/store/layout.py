"""What the request store holds and where: request ids, record and label keys, images.

    store.json                              format marker, written when the store is made
    images/<h[:2]>/<h>.png                  the normalized 28×28 image, h = sha256 of its pixels
    originals/<s[:2]>/<s><suffix>           the bytes as uploaded (up to MAX_ORIGINAL), s = sha256
    records/<YYYY-MM-DD>/<segment>.jsonl    one JSON line per prediction
    labels/<YYYY-MM-DD>/<segment>.jsonl     labels of that segment's requests (local store)
    labels/<YYYY-MM-DD>/<segment>/<n>-<t>.json   one object per label (S3 store)

A request id is `<segment>-<n>`: the segment names the records file that holds the request, so
a label finds its prediction without an index. Keys are the same on disk and under an S3 prefix.
"""

from __future__ import annotations

import hashlib
import io
import re
import secrets
from datetime import UTC, datetime

import numpy as np

FORMAT = 1
MARKER = "store.json"
MAX_ORIGINAL = 256 * 1024  # uploads up to this size are kept as sent; larger ones only normalized
_SEGMENT = re.compile(r"^(\d{8})T\d{6}-[0-9a-f]{8}$")
_REQUEST_ID = re.compile(r"^(\d{8}T\d{6}-[0-9a-f]{8})-(\d{1,9})$")
_SUFFIXES = {b"\x89PNG": ".png", b"\xff\xd8\xff": ".jpg", b"BM": ".bmp", b"GIF8": ".gif"}


def new_segment(now: datetime | None = None) -> str:
    """A fresh segment name: the UTC time it starts and 32 random bits."""
    return f"{(now or datetime.now(UTC)):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"


def request_id(segment: str, n: int) -> str:
    return f"{segment}-{n}"


def split_request_id(value: object) -> tuple[str, int] | None:
    """(segment, number) of a well-formed request id; None for anything else."""
    if not isinstance(value, str) or (match := _REQUEST_ID.match(value)) is None:
        return None
    return match.group(1), int(match.group(2))


def day_of(segment: str) -> str:
    """'2026-12-02' for a segment that started that day (UTC)."""
    match = _SEGMENT.match(segment)
    if match is None:
        raise ValueError(f"not a segment name: {segment!r}")
    digits = match.group(1)
    return f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"


def records_key(segment: str) -> str:
    return f"records/{day_of(segment)}/{segment}.jsonl"


def labels_key(segment: str) -> str:
    """The local store's labels file for the requests of `segment`."""
    return f"labels/{day_of(segment)}/{segment}.jsonl"


def labels_prefix(segment: str, n: int) -> str:
    """The S3 store's key prefix of the labels of request `<segment>-<n>`."""
    return f"labels/{day_of(segment)}/{segment}/{n}-"


def image_hash(image: np.ndarray) -> str:
    """The content address of a normalized 28×28 uint8 image: sha256 of its pixels."""
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).hexdigest()


def image_key(digest: str) -> str:
    return f"images/{digest[:2]}/{digest}.png"


def original_key(data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    suffix = next((s for magic, s in _SUFFIXES.items() if data.startswith(magic)), ".bin")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        suffix = ".webp"
    return f"originals/{digest[:2]}/{digest}{suffix}"


def encode_png(image: np.ndarray) -> bytes:
    """A 28×28 uint8 image as a grayscale PNG (lossless: decoding gives the same pixels)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8), "L").save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as opened:
        return np.asarray(opened.convert("L"), dtype=np.uint8)
