"""Request-store benchmark: throughput of `POST /predict` with the store on against the same
service with it off, measured in the same run (the baseline), on what users send.

    .venv/bin/python benchmarks/store_overhead.py [--model artifacts/model] [--requests 3000]

Every request is a new image, as in production, so the store writes a new image and a new
original each time: MNIST test digits (dark on white, 4× size, PNG) and, every tenth request,
a phone photo of one (640×480 JPEG: off-white paper, uneven light, sensor noise).
`digitops serve` runs with 2 workers; rounds alternate off-on, on-off... (a fresh store each
time: every image is new to it) and each configuration reports its median round. Prints JSON:
machine, versions, per configuration requests/s, latency percentiles and the service's CPU time
per request, the store's size afterwards, and the ratios on / off.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import psutil
from http_load import post_all

from digitops.net import NotReady, free_port, wait_for_url

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = 32
WARM_UP = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "artifacts" / "model"))
    parser.add_argument("--requests", type=int, default=3000, help="per round")
    parser.add_argument("--rounds", type=int, default=4, help="per configuration")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    bodies = [_json(data) for data in _inputs(WARM_UP + args.requests)]
    rounds: dict[str, list[dict]] = {"off": [], "on": []}
    for n in range(args.rounds):
        for mode in ("off", "on") if n % 2 == 0 else ("on", "off"):
            rounds[mode].append(_round(args, bodies, store=mode == "on"))
    summary = {mode: _median(results) for mode, results in rounds.items()}
    print(
        json.dumps(
            {
                "benchmark": "store_overhead",
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "versions": {p: version(p) for p in ("fastapi", "uvicorn", "onnxruntime")},
                "model": args.model,
                "workers": args.workers,
                "concurrency": CONCURRENCY,
                "inputs": "a new image per request: MNIST PNGs (112 px), 1 in 10 a phone JPEG",
                "rounds": rounds,
                "results": summary,
                "baseline": "store off",
                "throughput_ratio_on_vs_off": round(
                    summary["on"]["requests_per_s"] / summary["off"]["requests_per_s"], 3
                ),
                "server_cpu_ratio_on_vs_off": round(
                    summary["on"]["server_cpu_ms_per_request"]
                    / summary["off"]["server_cpu_ms_per_request"],
                    3,
                ),
            },
            indent=2,
        )
    )


def _round(args: argparse.Namespace, bodies: list[bytes], store: bool) -> dict:
    where = Path(tempfile.mkdtemp(prefix="digitops-bench-store-"))
    port = free_port()
    command = [
        *(sys.executable, "-m", "digitops.cli", "serve", "--model", args.model),
        *("--port", str(port), "--workers", str(args.workers)),
        *("--store", str(where / "store") if store else ""),
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=where,
        start_new_session=True,
    )
    try:
        try:
            wait_for_url(
                f"http://127.0.0.1:{port}/health", 120, alive=lambda: process.poll() is None
            )
        except NotReady as exc:
            raise SystemExit(str(exc)) from None
        url = f"http://127.0.0.1:{port}/predict"
        asyncio.run(post_all(url, bodies[:WARM_UP], CONCURRENCY))
        server = [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]
        before = sum(_cpu(p) for p in server)
        result = asyncio.run(post_all(url, bodies[WARM_UP:], CONCURRENCY))
        # CPU the service spent per request: steadier than requests/s on a shared machine.
        used = sum(_cpu(p) for p in server) - before
        result["server_cpu_ms_per_request"] = round(used / len(bodies[WARM_UP:]) * 1000, 3)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    if store:
        files = [p for p in (where / "store").rglob("*") if p.is_file()]
        result["store_files"] = len(files)
        result["store_mib"] = round(sum(p.stat().st_size for p in files) / 2**20, 2)
    shutil.rmtree(where, ignore_errors=True)
    return result


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _median(results: list[dict]) -> dict:
    keys = ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_request")
    return {key: round(float(np.median([r[key] for r in results])), 2) for key in keys}


def _inputs(count: int) -> list[bytes]:
    """`count` different images: digit PNGs, a phone photo in every tenth place."""
    from digitops.data.idx import BUNDLED_MNIST, load_idx_dir

    digits = load_idx_dir(Path(BUNDLED_MNIST)).test_images
    if count > len(digits):
        raise SystemExit(f"at most {len(digits) - WARM_UP} requests (one MNIST digit each)")
    return [
        _phone_photo(digits[i], i) if i % 10 == 9 else _png(255 - digits[i]) for i in range(count)
    ]


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((112, 112)).save(buffer, "PNG")
    return buffer.getvalue()


def _phone_photo(digit: np.ndarray, seed: int) -> bytes:
    """A digit as a phone camera sees it on paper: 640×480, off-white page lit unevenly,
    grey-blue ink, noise, JPEG at quality 85."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ink = np.asarray(Image.fromarray(digit).resize((260, 260), Image.Resampling.BICUBIC))
    ink = ink.astype(np.float32) / 255.0
    height, width = 480, 640
    ys, xs = np.mgrid[0:height, 0:width]
    light = 0.85 + 0.1 * (xs / width) - 0.08 * (ys / height)
    page = np.stack([light * 0.97, light * 0.95, light * 0.90], axis=-1)
    top, left = rng.integers(60, 160), rng.integers(120, 300)
    colour = np.array([0.15, 0.18, 0.35])
    area = page[top : top + 260, left : left + 260]
    area[:] = area * (1 - ink[..., None]) + colour * ink[..., None]
    noisy = np.clip(page + rng.normal(0, 0.025, page.shape), 0, 1)
    buffer = io.BytesIO()
    Image.fromarray((noisy * 255).astype(np.uint8)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _json(data: bytes) -> bytes:
    return json.dumps({"image": base64.b64encode(data).decode()}).encode()


if __name__ == "__main__":
    main()
