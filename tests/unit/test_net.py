"""`digitops.net`: a free port, and waiting for a URL to answer (or for its process to die)."""

import subprocess
import sys
import time

import pytest

from digitops.net import NotReady, free_port, wait_for_url


def test_wait_for_url_returns_once_a_real_server_answers(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_url(f"http://127.0.0.1:{port}/", timeout_s=30, alive=lambda: server.poll() is None)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_wait_for_url_gives_up_as_soon_as_the_process_dies():
    port = free_port()
    dying = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    started = time.monotonic()
    with pytest.raises(NotReady, match="ended"):
        wait_for_url(f"http://127.0.0.1:{port}/", timeout_s=60, alive=lambda: dying.poll() is None)
    assert time.monotonic() - started < 10  # not the 60 s timeout


def test_wait_for_url_times_out_when_nothing_answers():
    port = free_port()
    started = time.monotonic()
    with pytest.raises(NotReady, match="no answer"):
        wait_for_url(f"http://127.0.0.1:{port}/", timeout_s=1, interval_s=0.1)
    assert time.monotonic() - started < 5
