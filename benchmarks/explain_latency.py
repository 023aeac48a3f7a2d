"""`POST /explain` latency: occlusion with the ONNX model, against `POST /predict` of the same
images on the same service in the same run (the baseline).

    .venv/bin/python benchmarks/explain_latency.py [--model artifacts/model] [--requests 300]

`digitops serve` (1 worker, no store) answers one request at a time from one client, for two
inputs users send: an MNIST test digit (dark on white, 112 px PNG) and a phone-style photo of a
printed digit (160 px JPEG, `digitops.data.printed`). Prints JSON: machine, versions, p50 and p95
of each endpoint per input, and the ratio explain / predict.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from digitops.data.idx import BUNDLED_MNIST, load_idx_dir
from digitops.data.printed import photographs
from digitops.net import free_port, wait_for_url

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "artifacts" / "model"))
    parser.add_argument("--requests", type=int, default=300, help="per endpoint and input")
    args = parser.parse_args()

    digit = io.BytesIO()
    Image.fromarray(255 - load_idx_dir(BUNDLED_MNIST).test_images[0]).resize((112, 112)).save(
        digit, "PNG"
    )
    inputs = {"mnist_png_112px": digit.getvalue(), "photo_jpeg_160px": photographs(1, 3)[0][0]}
    port = free_port()
    serve = [sys.executable, "-m", "digitops.cli", "serve", "--model", args.model, "--store", ""]
    server = subprocess.Popen(
        [*serve, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results: dict[str, dict[str, Any]] = {}
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_url(f"{url}/ready", 120, alive=lambda: server.poll() is None)
        with httpx.Client(base_url=url, timeout=30) as http:
            for name, data in inputs.items():
                results[name] = {
                    endpoint: _latency(http, endpoint, data, args.requests)
                    for endpoint in ("/predict", "/explain")
                }
    finally:
        server.terminate()
        server.wait(timeout=30)
    for timing in results.values():
        timing["ratio_explain_vs_predict_p50"] = (
            timing["/explain"]["p50_ms"] / timing["/predict"]["p50_ms"]
        )
    print(
        json.dumps(
            {
                "benchmark": "explain_latency",
                "date": time.strftime("%Y-%m-%d"),
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "python": platform.python_version(),
                "versions": {n: version(n) for n in ("onnxruntime", "fastapi", "uvicorn")},
                "requests": args.requests,
                "results": results,
            },
            indent=2,
        )
    )


def _latency(http: httpx.Client, endpoint: str, data: bytes, count: int) -> dict[str, float]:
    """Sequential requests after a warm-up: p50 and p95 in milliseconds."""
    files = {"file": ("digit", data)}
    for _ in range(20):
        http.post(endpoint, files=files).raise_for_status()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        http.post(endpoint, files=files).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    cuts = statistics.quantiles(times, n=20)
    return {"p50_ms": statistics.median(times), "p95_ms": cuts[18]}


if __name__ == "__main__":
    main()
