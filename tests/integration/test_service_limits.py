"""The service's limits hold whatever a client does, against a real 2-worker `digitops serve`:
bodies (chunked or not), headers, slow clients, floods, deep JSON, and a request log that
cannot be written. Each test reproduces a failure found by a hostile-client review."""

import io
import json
import re
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from digitops.serving.protocol import BODY_IDLE_TIMEOUT_S, HEADER_TIMEOUT_S

from ..serving_helpers import png, running_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, trained):
    work = tmp_path_factory.mktemp("limits")
    extra = ("--workers", "2", "--store", str(work / "store"))
    with running_service(trained.model_dir, work, *extra) as url:
        yield url


def workers(url: str) -> list[psutil.Process]:
    """The uvicorn worker processes of the service listening on `url`'s port."""
    port = str(urlsplit(url).port)
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "serve" in cmdline and port in cmdline:
            children = process.children(recursive=True)
            return [c for c in children if "spawn_main" in " ".join(c.cmdline())]
    raise AssertionError(f"no service on port {port}")


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def status_of(response: bytes) -> int:
    match = re.match(rb"HTTP/1.1 (\d{3})", response)
    assert match, response[:200]
    return int(match.group(1))


def read_response(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        if b"\r\n\r\n" in data and _complete(data):
            break
    return data


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
    return length is not None and len(body) >= int(length.group(1))


def error_of(response: bytes) -> str:
    return json.loads(response.partition(b"\r\n\r\n")[2])["error"]


def rejected_total(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("digitops_rejected_requests_total{")
    )


def test_600_mb_chunked_upload_is_refused_early_and_memory_stays_flat(service):
    processes = workers(service)
    idle = max(p.memory_info().rss for p in processes)
    peak, stop = [idle], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak.append(max(p.memory_info().rss for p in processes))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    boundary = "x" * 16
    sock = connect(service)
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n"
        + f"content-type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
    )
    opening = (
        f'--{boundary}\r\ncontent-disposition: form-data; name="file"; filename="a.png"\r\n'
        "content-type: image/png\r\n\r\n"
    ).encode()
    chunk = b"0" * 2**20
    sent, response = 0, b""
    try:
        for piece in [opening] + [chunk] * 600:  # 600 MB, never announced
            if select.select([sock], [], [], 0)[0]:
                break
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
        response = read_response(sock)
    finally:
        sock.close()
        stop.set()
        watcher.join()
    assert status_of(response) == 413 and "10 MiB" in error_of(response)
    assert sent < 64 * 2**20, f"the service read {sent / 2**20:.0f} MB before refusing"
    assert max(peak) - idle < 50 * 2**20, f"worker memory grew {(max(peak) - idle) / 2**20} MB"


@pytest.mark.parametrize(
    "headers",
    [
        {"x-big": "a" * 64 * 1024},
        {f"x-{i}": "1" for i in range(150)},
    ],
    ids=["64-KiB-header", "150-headers"],
)
def test_oversized_headers_are_431(service, headers):
    before = rejected_total(service)
    sock = connect(service)
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    sock.sendall(f"GET /health HTTP/1.1\r\nhost: test\r\n{lines}\r\n".encode())
    response = read_response(sock)
    sock.close()
    assert status_of(response) == 431 and "headers" in error_of(response)
    assert rejected_total(service) == before + 1


def test_slow_clients_are_timed_out_with_408(service):
    halfway = []
    for i in range(40):
        sock = connect(service)
        if i % 2:  # headers sent, then the body stops
            sock.sendall(b"POST /predict HTTP/1.1\r\nhost: t\r\ncontent-length: 1000\r\n")
            sock.sendall(b"content-type: application/json\r\n\r\n{")
        else:  # a request line and one header, then nothing
            sock.sendall(b"GET /health HTTP/1.1\r\nx-slow: 1\r\n")
        halfway.append(sock)
    time.sleep(max(HEADER_TIMEOUT_S, BODY_IDLE_TIMEOUT_S) + 2)
    statuses = []
    for sock in halfway:
        sock.settimeout(5)
        statuses.append(status_of(read_response(sock)))
        assert sock.recv(1) == b"", "the connection is closed after the 408"
        sock.close()
    assert statuses == [408] * 40
    assert httpx.get(f"{service}/health").status_code == 200


def large_png(image: np.ndarray, side: int = 1600) -> bytes:
    """An MNIST digit blown up to a large PNG (a scan), still small on the wire."""
    buffer = io.BytesIO()
    Image.fromarray(255 - image).resize((side, side), Image.Resampling.NEAREST).save(buffer, "PNG")
    return buffer.getvalue()


def test_health_answers_within_100_ms_during_a_batch_flood(service, mnist_slice):
    from digitops.data.dataset import load_dataset

    images = load_dataset(mnist_slice).split("test").images[:64]
    files = [("files", (f"{i}.png", large_png(img))) for i, img in enumerate(images)]
    stop = threading.Event()

    def flood(_: int) -> int:
        done = 0
        with httpx.Client(base_url=service, timeout=300) as client:
            while not stop.is_set():
                assert client.post("/predict/batch", files=files).status_code == 200
                done += 1
        return done

    with ThreadPoolExecutor(6) as pool:
        floods = [pool.submit(flood, i) for i in range(6)]
        time.sleep(2)  # every worker thread busy, batches queued behind them
        latencies = []
        with httpx.Client(base_url=service) as client:
            for _ in range(20):
                started = time.perf_counter()
                assert client.get("/health").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.1)
        stop.set()
        batches = sum(f.result() for f in floods)
    assert batches >= 1
    assert max(latencies) < 0.1, f"/health took up to {max(latencies) * 1000:.0f} ms"


def test_deeply_nested_json_is_400(service):
    before = rejected_total(service)
    nested = "[" * 100_000 + "]" * 100_000
    response = httpx.post(
        f"{service}/predict", content=nested, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "JSON" in response.json()["error"]
    assert rejected_total(service) == before + 1


@pytest.mark.parametrize(
    ("request_args", "status"),
    [
        ({"content": b"no parts here", "headers": {"content-type": "multipart/form-data"}}, 400),
        (
            {
                "content": b"--b\r\ncontent-disposition: form-data\r\n\r\nx",
                "headers": {"content-type": "multipart/form-data; boundary=b"},
            },
            400,
        ),
    ],
    ids=["no-boundary", "no-part-name"],
)
def test_multipart_errors_are_json_errors_and_counted(service, request_args, status):
    before = rejected_total(service)
    response = httpx.post(f"{service}/predict", **request_args)
    assert response.status_code == status and response.json()["error"]
    assert "detail" not in response.json()
    assert rejected_total(service) == before + 1


def test_unknown_paths_and_methods_answer_in_the_same_shape(service):
    assert httpx.get(f"{service}/nowhere").json() == {"error": "Not Found"}
    assert httpx.get(f"{service}/predict").json() == {"error": "Method Not Allowed"}


def test_metrics_count_every_worker(service, mnist_slice):
    from digitops.data.dataset import load_dataset

    digit = png(load_dataset(mnist_slice).split("test").images[0])

    def predictions() -> float:
        with httpx.Client() as client:  # a new connection: any worker may answer
            text = client.get(f"{service}/metrics").text
        return float(re.search(r"^digitops_predictions_total (\S+)", text, re.M).group(1))

    before = predictions()
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(
                lambda _: httpx.post(f"{service}/predict", files={"file": ("d.png", digit)}),
                range(100),
            )
        )
    assert {c.status_code for c in codes} == {200}
    assert {predictions() for _ in range(12)} == {before + 100}
