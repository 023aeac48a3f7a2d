"""Serving benchmark: latency (p50, p99) and throughput of one prediction over HTTP at
concurrency 1, 8 and 32, for digitops' service and, in the same run, two peers users would pick
instead on the same model and preprocessing: LitServe and KServe's Python model server.

    .venv/bin/python benchmarks/serve_latency.py [--model artifacts/model] [--requests 2000]
        [--servers digitops litserve kserve digitops-no-store digitops-int8]

Every server gets the same JSON body (one MNIST test digit as a base64 PNG, dark on white at
4× size, so preprocessing does real work) from an aiohttp client on this machine, 127.0.0.1
only, after a warm-up. digitops keeps every request in its store, as `digitops serve` does by
default; `digitops-no-store` is the same service without one (the peers keep nothing), and
`digitops-int8` the same service answering with the model's int8 file. KServe runs from its
own environment (`make tools/kserve/.venv/.installed`, which
`make bench` builds). Prints JSON: machine, versions, per server and concurrency the
requests/s and latency percentiles, and each server's throughput over digitops'.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from http_load import post_all

from digitops.net import NotReady, free_port, wait_for_url

ROOT = Path(__file__).resolve().parents[1]
LEVELS = (1, 8, 32)


KSERVE_PYTHON = ROOT / "tools" / "kserve" / ".venv" / "bin" / "python"


@dataclass(frozen=True)
class Server:
    """How to start one server on a port, and its prediction and readiness paths."""

    command: Callable[[int, argparse.Namespace], list[str]]
    predict: str = "/predict"
    ready: str = "/health"
    env: dict[str, str] = field(default_factory=dict)


def _digitops(port: int, args: argparse.Namespace, store: bool = True) -> list[str]:
    return [
        *(sys.executable, "-m", "digitops.cli", "serve", "--model", args.model),
        *("--port", str(port), "--workers", str(args.workers)),
        *("--store", str(Path(tempfile.mkdtemp()) / "store") if store else ""),
    ]


SERVERS = {
    "digitops": Server(_digitops),
    # The peers keep nothing; this is digitops doing only that same work.
    "digitops-no-store": Server(lambda port, args: _digitops(port, args, store=False)),
    "digitops-int8": Server(_digitops, env={"DIGITOPS_PRECISION": "int8"}),
    "litserve": Server(
        lambda port, args: [
            sys.executable,
            str(ROOT / "benchmarks" / "litserve_peer.py"),
            *(args.model, str(port)),
        ]
    ),
    "kserve": Server(
        lambda port, args: [
            str(KSERVE_PYTHON),
            str(ROOT / "benchmarks" / "kserve_peer.py"),
            *(args.model, str(port), "--workers", str(args.workers)),
        ],
        predict="/v1/models/digit:predict",
        ready="/v1/models/digit",
        env={"PYTHONPATH": str(ROOT / "src")},  # digitops' serving code, from this checkout
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "artifacts" / "model"))
    parser.add_argument("--requests", type=int, default=2000, help="per concurrency level")
    parser.add_argument(
        "--workers", type=int, default=2, help="server processes (LitServe runs two)"
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=list(SERVERS),
        default=["digitops", "litserve", "kserve", "digitops-no-store"],
    )
    args = parser.parse_args()
    if "kserve" in args.servers and not KSERVE_PYTHON.exists():
        raise SystemExit(f"no {KSERVE_PYTHON}: run `make tools/kserve/.venv/.installed` first")

    body = json.dumps({"image": base64.b64encode(_digit_png()).decode()}).encode()
    results = {name: _measure(name, SERVERS[name], body, args) for name in args.servers}
    print(json.dumps(_report(results, args), indent=2))


def _measure(name: str, server: Server, body: bytes, args: argparse.Namespace) -> dict:
    port = free_port()
    process = subprocess.Popen(
        server.command(port, args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env=os.environ | server.env,
        start_new_session=True,  # the servers' workers are child processes
    )
    try:
        try:
            ready = f"http://127.0.0.1:{port}{server.ready}"
            wait_for_url(ready, 120, alive=lambda: process.poll() is None)
        except NotReady as exc:
            raise SystemExit(f"{name}: {exc}") from None
        url = f"http://127.0.0.1:{port}{server.predict}"
        asyncio.run(post_all(url, [body] * 300, 32))  # warm-up (every worker loaded)
        return {str(c): asyncio.run(post_all(url, [body] * args.requests, c)) for c in LEVELS}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _report(results: dict, args: argparse.Namespace) -> dict:
    base = results.get("digitops")
    ratios = {
        name: {
            c: round(base[c]["requests_per_s"] / figures[c]["requests_per_s"], 2) for c in figures
        }
        for name, figures in results.items()
        if base is not None and name != "digitops"
    }
    versions = {p: version(p) for p in ("fastapi", "uvicorn", "onnxruntime", "litserve", "orjson")}
    if "kserve" in results:
        query = "from importlib.metadata import version; print(version('kserve'))"
        versions["kserve"] = subprocess.run(
            [str(KSERVE_PYTHON), "-c", query],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    return {
        "benchmark": "serve_latency",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": versions,
        "model": args.model,
        "workers": args.workers,
        "results": results,
        "baseline": "digitops",
        "digitops_throughput_over": ratios,
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
