"""Network helpers shared by deploy, tests, benchmarks and scripts: a free port, a URL to wait on.

Waiting uses tenacity (retry until a deadline) rather than a hand-written sleep loop.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Callable

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from digitops.errors import DigitopsError


class NotReady(DigitopsError):
    """A URL did not answer in time, or the process behind it ended first."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_url(
    url: str,
    timeout_s: float = 60,
    alive: Callable[[], bool] | None = None,
    interval_s: float = 0.3,
) -> None:
    """Return once `url` answers with a 2xx status; raise `NotReady` after `timeout_s` seconds,
    or as soon as `alive()` says the process that should answer has ended."""

    def probe() -> None:
        if alive is not None and not alive():
            raise NotReady(f"{url}: the process that should answer has ended")
        with urllib.request.urlopen(url, timeout=min(2.0, timeout_s)):
            return

    try:
        for attempt in Retrying(
            retry=retry_if_exception_type(OSError),  # refused, reset, timed out, HTTP 4xx/5xx
            stop=stop_after_delay(timeout_s),
            wait=wait_fixed(interval_s),
            reraise=True,
        ):
            with attempt:
                probe()
    except urllib.error.HTTPError as exc:
        raise NotReady(f"{url}: answered {exc.code} for {timeout_s:.0f} s") from None
    except OSError as exc:
        raise NotReady(f"{url}: no answer in {timeout_s:.0f} s ({exc})") from None
