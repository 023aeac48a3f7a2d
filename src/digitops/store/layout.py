"""What the request store holds and where: request ids, record and label keys, image blobs.

    store.json                              format marker, written when the store is made
    records/<YYYY-MM-DD>/<segment>.jsonl    one JSON line per prediction
    blobs/<YYYY-MM-DD>/<segment>.pack       the segment's images, back to back: each new
                                            normalized 28×28 image (784 bytes of gray
                                            levels) and each upload as sent (up to
                                            MAX_ORIGINAL bytes)
    labels/<YYYY-MM-DD>/<segment>.jsonl     labels of that segment's requests (local store)
    labels/<YYYY-MM-DD>/<segment>/<n>-<t>.json   one object per label (S3 store)

Images are content-addressed: a record names its image by the sha256 of its pixels (`image`)
and its upload by the sha256 of its bytes (`original`), and says where the bytes are
(`image_at`, `original_at`: `<segment>:<offset>:<length>` in that segment's pack). A writer
keeps an image once: a request for an image it has kept points at the bytes already there.
Packing them, rather than a file per image, keeps the prediction path to two appends: a new
file per image costs the file system more than the rest of the record together.

A request id is `<segment>-<n>`: the segment names the records file that holds the request, so
a label finds its prediction without an index. Keys are the same on disk and under an S3 prefix.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from datetime import UTC, datetime

import numpy as np

FORMAT = 1
MARKER = "store.json"
IMAGE_BYTES = 28 * 28
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


def pack_key(segment: str) -> str:
    return f"blobs/{day_of(segment)}/{segment}.pack"


def location(segment: str, offset: int, length: int) -> str:
    return f"{segment}:{offset}:{length}"


def parse_location(value: str) -> tuple[str, int, int]:
    """(pack key, offset, length) of an `image_at` / `original_at` value."""
    segment, offset, length = value.rsplit(":", 2)
    return pack_key(segment), int(offset), int(length)


def kind_of(data: bytes) -> str:
    """The file type of an upload, by its first bytes: '.png', '.jpg'... ('.bin' if unknown)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return next((s for magic, s in _SUFFIXES.items() if data.startswith(magic)), ".bin")


def image_bytes(image: np.ndarray) -> bytes:
    """A normalized image as the pack keeps it: 784 bytes, 28 rows of 28 gray levels (no
    encoding: a PNG encoder would cost more than the rest of the record together)."""
    return np.ascontiguousarray(image, dtype=np.uint8).tobytes()


def image_from_bytes(data: bytes) -> np.ndarray:
    if len(data) != IMAGE_BYTES:
        raise ValueError(f"{len(data)} bytes, not a 28×28 image ({IMAGE_BYTES})")
    return np.frombuffer(data, dtype=np.uint8).reshape(28, 28).copy()


def encode_embedding(vector: np.ndarray) -> str:
    """An embedding as a record keeps it: its float32 values (little-endian), base64. Writing
    32 floats as JSON numbers would cost a quarter of the whole record."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


def decode_embedding(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").copy()
