"""Start and stop `digitops serve` on a free 127.0.0.1 port for tests."""

import io
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"{url} did not come up:\n{log.read_text()}") from None
            time.sleep(0.3)


@contextmanager
def running_service(model: Path, work: Path, *extra: str) -> Iterator[str]:
    """`digitops serve` in a subprocess; yields its base URL and stops it afterwards."""
    port = free_port()
    log = work / f"serve-{port}.log"
    with open(log, "w") as stream:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "digitops.cli", "serve", "--model", str(model)),
                *("--port", str(port), *extra),
            ],
            stdout=stream,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(f"{url}/health", process, log)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


def png(image: np.ndarray, invert: bool = True, scale: int = 4) -> bytes:
    """An MNIST digit as users send it: dark ink on white, larger, PNG."""
    pixels = 255 - image if invert else image
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((28 * scale, 28 * scale)).save(buffer, "PNG")
    return buffer.getvalue()
