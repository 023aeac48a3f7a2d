"""uvicorn's HTTP/1.1 protocol (httptools) with the limits uvicorn itself does not set.

uvicorn bounds neither the size nor the number of request headers (with httptools), nor how
long a client may take to send them or the body: a slow client holds its connection open for
as long as it likes, and one header can be 64 MB. This subclass adds those four bounds and
answers them in the service's `{"error": ...}` shape, counted in `/metrics`; everything else is
uvicorn's own code. (A proxy in front would do the same, but the local service has none.)
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from digitops.serving import metrics

MAX_HEADER_BYTES = 16 * 1024  # the request line's URL plus every header name and value
MAX_HEADERS = 100
HEADER_TIMEOUT_S = 10.0  # from connecting (or the first byte of a request) to its last header
BODY_IDLE_TIMEOUT_S = 10.0  # between two pieces of a request body


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request that broke a limit."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` plus header size and count limits and header and body timeouts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._header_count = 0
        self._refusal: tuple[int, str] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(HEADER_TIMEOUT_S, "the request headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is None:  # after a refusal the rest of the request is ignored
            super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
        else:  # the parser stopped because a callback refused the request
            self._send_refusal()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = self._header_count = 0
        self._arm(HEADER_TIMEOUT_S, "the request headers")

    def on_url(self, url: bytes) -> None:
        self._count(len(url), 0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value), 1)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._arm(BODY_IDLE_TIMEOUT_S, "the request body")
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._arm(BODY_IDLE_TIMEOUT_S, "the request body")
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _count(self, size: int, headers: int) -> None:
        self._header_bytes += size
        self._header_count += headers
        if self._header_bytes > MAX_HEADER_BYTES or self._header_count > MAX_HEADERS:
            self._refusal = (
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"the request headers are over {MAX_HEADER_BYTES // 1024} KiB "
                f"or {MAX_HEADERS} fields",
            )
            raise _Refused

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expire, seconds, what)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, seconds: float, what: str) -> None:
        self._timer = None
        if self.flow.read_paused:  # the server stopped reading (the app is busy), not the client
            self._arm(seconds, what)
            return
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()
            return
        self._refusal = (HTTPStatus.REQUEST_TIMEOUT, f"{what} did not arrive within {seconds:g} s")
        self._send_refusal()

    def _send_refusal(self) -> None:
        assert self._refusal is not None
        status, message = self._refusal
        body = json.dumps({"error": message}).encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        if not self.transport.is_closing():
            self.transport.write(head.encode() + body)
            self.transport.close()
        metrics.rejected(status)
