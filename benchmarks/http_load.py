"""The HTTP load generator the serving benchmarks share: `concurrency` aiohttp clients on this
machine post `bodies` (one request each, in order) to a URL on 127.0.0.1 and time each answer."""

from __future__ import annotations

import asyncio
import time

import numpy as np


async def post_all(url: str, bodies: list[bytes], concurrency: int) -> dict[str, float]:
    """Requests/s and latency percentiles of posting every body (JSON); any non-200 stops it."""
    import aiohttp

    latencies: list[float] = []
    remaining = iter(bodies)
    headers = {"content-type": "application/json"}

    async def client(session: aiohttp.ClientSession) -> None:
        for body in remaining:
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url}: HTTP {response.status}")
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "requests": len(bodies),
        "requests_per_s": round(len(bodies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }
