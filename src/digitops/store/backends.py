"""Where the request store's keys live: a local directory (the default) or an S3 prefix.

Both take the same keys (`digitops.store.layout`). A local store appends records to files; S3
has no append, so there each write is an object of its own. Every failure is a `StoreError`
naming the store, whichever backend raised it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from digitops.errors import StoreError
from digitops.store.layout import FORMAT, MARKER

S3_TIMEOUT_S = 3  # connect and read: an unreachable bucket must not hold a prediction for long


class Backend(Protocol):
    uri: str
    appends: bool  # whether `append` adds to an existing key (else every write is a new key)

    def ensure(self) -> None: ...
    def put(self, key: str, data: bytes) -> None: ...
    def append(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes | None: ...
    def get_range(self, key: str, offset: int, length: int) -> bytes: ...
    def keys(self, prefix: str) -> list[str]: ...
    def locked(self, key: str) -> Any: ...


def open_backend(uri: str) -> Backend:
    """The backend of `uri`: `s3://bucket/prefix`, else a local directory."""
    if uri.startswith("s3://"):
        return S3Backend(uri)
    return LocalBackend(Path(uri))


def _marker() -> bytes:
    return f'{{"format": {FORMAT}, "kind": "digitops request store"}}\n'.encode()


class LocalBackend:
    """A directory. Appends are one `write` each on an `O_APPEND` file, so a process killed
    mid-write leaves a whole record or none; a short write (disk full) is truncated away.
    (`write` returns once the data is in the page cache: a killed process loses nothing it
    wrote; a power cut may lose the last seconds, as for any file not fsync'ed per request.)"""

    appends = True

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self.uri = str(self.root)

    def ensure(self) -> None:
        """Make the store directory (and its marker) if needed; refuse what cannot be one."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not (self.root / MARKER).is_file():
                if any(p for p in self.root.iterdir() if not p.name.startswith(".")):
                    raise StoreError(
                        f"{self.root}: not a request store (no {MARKER}) and not empty; "
                        "name an empty or new directory"
                    )
                self.put(MARKER, _marker())
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot be used as the request store ({exc})") from None

    def put(self, key: str, data: bytes) -> None:
        """Write `key` whole: a temporary file renamed into place, so a reader never sees
        part of it."""
        path = f"{self.uri}/{key}"
        directory, _, name = path.rpartition("/")
        tmp = f"{directory}/.{name}.{os.getpid()}-{threading.get_ident()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except FileNotFoundError:  # the key's folder is new
            os.makedirs(directory, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError:
            with suppress(OSError):
                os.unlink(tmp)
            raise

    def append(self, key: str, data: bytes) -> None:
        """Add `data` to `key` in one write. The file is opened for each append, not kept
        open: a store whose disk turns read-only can be remounted, and a segment moved away
        is made anew rather than written into unseen (about 10 µs)."""
        path = f"{self.uri}/{key}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except FileNotFoundError:  # a new day's folder
            os.makedirs(path.rpartition("/")[0], exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, data)
            if written != len(data):  # the disk filled up part way: take the part out
                os.ftruncate(fd, os.fstat(fd).st_size - written)
                raise OSError(errno.ENOSPC, "short write: the disk is full", path)
        finally:
            os.close(fd)

    def get(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        with open(self.root / key, "rb") as handle:
            handle.seek(offset)
            data = handle.read(length)
        if len(data) != length:
            raise StoreError(f"{self.uri}/{key}: {length} bytes at {offset} are not all there")
        return data

    def keys(self, prefix: str) -> list[str]:
        base = self.root / prefix.rstrip("/")
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root))
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    @contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """An exclusive lock for `key` across processes (a lock file beside it)."""
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


class S3Backend:
    """A prefix of an S3 bucket (any S3 endpoint: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)."""

    appends = False

    def __init__(self, uri: str) -> None:
        url = urlparse(uri)
        if not url.netloc:
            raise StoreError(f"{uri}: an S3 store is s3://bucket/prefix")
        self.bucket = url.netloc
        self.prefix = url.path.strip("/") + "/" if url.path.strip("/") else ""
        self.uri = f"s3://{self.bucket}/{self.prefix}"
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                config=Config(
                    connect_timeout=S3_TIMEOUT_S,
                    read_timeout=S3_TIMEOUT_S,
                    retries={"max_attempts": 2, "mode": "standard"},
                ),
            )
        return self._client

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"{self.uri}: cannot {what} ({exc})") from None

    def ensure(self) -> None:
        with self._errors("reach the bucket"):
            self.client.head_bucket(Bucket=self.bucket)
            if self.get(MARKER) is None:
                self.put(MARKER, _marker())

    def put(self, key: str, data: bytes) -> None:
        with self._errors(f"write {key}"):
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)

    def append(self, key: str, data: bytes) -> None:
        raise StoreError(f"{self.uri}: S3 objects cannot be appended to; write a new key")

    def get(self, key: str) -> bytes | None:
        with self._errors(f"read {key}"):
            try:
                body: bytes = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)[
                    "Body"
                ].read()
            except self.client.exceptions.NoSuchKey:
                return None
            return body

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        with self._errors(f"read {key}"):
            answer = self.client.get_object(
                Bucket=self.bucket,
                Key=self.prefix + key,
                Range=f"bytes={offset}-{offset + length - 1}",
            )
            data: bytes = answer["Body"].read()
        if len(data) != length:
            raise StoreError(f"{self.uri}{key}: {length} bytes at {offset} are not all there")
        return data

    def keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        with self._errors(f"list {prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                found += [item["Key"][len(self.prefix) :] for item in page.get("Contents", [])]
        return sorted(found)

    @contextmanager
    def locked(self, key: str) -> Iterator[None]:
        # S3 has no locks: two labels for one request given at the same instant can both land
        # (readers take the latest; the earlier one stays in the store).
        yield
