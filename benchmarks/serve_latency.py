"""Serving benchmark: latency (p50, p99) and throughput of `POST /predict` over HTTP at
concurrency 1, 8 and 32, for digitops' service and, in the same run, LitServe on the same model.

    .venv/bin/python benchmarks/serve_latency.py [--model artifacts/model] [--requests 2000]

Both servers get the same JSON body (one MNIST test digit as a base64 PNG, dark on white at
4× size, so preprocessing does real work) from an aiohttp client on this machine, 127.0.0.1
only, after a warm-up. Prints JSON: machine, versions, per server and concurrency the
requests/s and latency percentiles, and digitops' throughput over LitServe's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from http_load import post_all

from digitops.net import NotReady, free_port, wait_for_url

ROOT = Path(__file__).resolve().parents[1]
LEVELS = (1, 8, 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "artifacts" / "model"))
    parser.add_argument("--requests", type=int, default=2000, help="per concurrency level")
    parser.add_argument(
        "--workers", type=int, default=2, help="digitops server processes (LitServe runs two)"
    )
    args = parser.parse_args()

    body = json.dumps({"image": base64.b64encode(_digit_png()).decode()}).encode()
    results = {}
    servers = {
        "digitops": lambda port: [
            *(sys.executable, "-m", "digitops.cli", "serve", "--model", args.model),
            *("--port", str(port), "--workers", str(args.workers)),
            *("--store", str(Path(tempfile.mkdtemp()) / "store")),
        ],
        "litserve": lambda port: [
            sys.executable,
            str(ROOT / "benchmarks" / "litserve_peer.py"),
            args.model,
            str(port),
        ],
    }
    for name, command in servers.items():
        port = free_port()
        process = subprocess.Popen(
            command(port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            start_new_session=True,  # LitServe and uvicorn workers are child processes
        )
        try:
            try:
                health = f"http://127.0.0.1:{port}/health"
                wait_for_url(health, 120, alive=lambda p=process: p.poll() is None)
            except NotReady as exc:
                raise SystemExit(f"{name}: {exc}") from None
            url = f"http://127.0.0.1:{port}/predict"
            asyncio.run(post_all(url, [body] * 300, 32))  # warm-up
            results[name] = {
                str(c): asyncio.run(post_all(url, [body] * args.requests, c)) for c in LEVELS
            }
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    print(json.dumps(_report(results, args), indent=2))


def _report(results: dict, args: argparse.Namespace) -> dict:
    ratios = {
        c: round(
            results["digitops"][c]["requests_per_s"] / results["litserve"][c]["requests_per_s"], 2
        )
        for c in results["digitops"]
    }
    return {
        "benchmark": "serve_latency",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {p: version(p) for p in ("fastapi", "uvicorn", "onnxruntime", "litserve")},
        "model": args.model,
        "digitops_workers": args.workers,
        "results": results,
        "baseline": "litserve",
        "throughput_ratio_vs_litserve": ratios,
    }


def _digit_png() -> bytes:
    from PIL import Image

    from digitops.data.idx import BUNDLED_MNIST, load_idx_dir

    digit = 255 - load_idx_dir(Path(BUNDLED_MNIST)).test_images[0]
    buffer = io.BytesIO()
    Image.fromarray(digit).resize((112, 112)).save(buffer, "PNG")
    return buffer.getvalue()


if __name__ == "__main__":
    main()
