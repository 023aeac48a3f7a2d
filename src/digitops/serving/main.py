"""Entry points that run the service: `serve` (the CLI's), and `python -m digitops.serving.main`
for containers, configured by the environment:

    DIGITOPS_MODEL=models:/digit-classifier@production PORT=8000 WORKERS=2 \\
        python -m digitops.serving.main

`DIGITOPS_MODEL` names the model (a directory, `models:/...` or `runs:/...`), `DIGITOPS_PRECISION`
which of its files answers (`fp32`, default, or `int8`: `model.int8.onnx`);
`DIGITOPS_STORE` is the request store predictions are kept in (a directory or
`s3://bucket/prefix`; unset: none, and /feedback answers 404), `DIGITOPS_STORE_CAP_GIB` the size
at which a local one stops taking new requests (default 20); `DIGITOPS_CHALLENGER` names a
challenger alias (`models:/digit-classifier@candidate`), `DIGITOPS_ROLLOUT` its mode (`shadow`,
default, or `canary`) and `DIGITOPS_CANARY_SHARE` the canary's share of clients (default 0.1);
`HOST`, `PORT`
and `WORKERS` say where and how many processes. Every way in runs uvicorn with the same limits
(`digitops.serving.protocol`) and metrics summed over its workers (`digitops.serving.metrics`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from digitops.errors import ModelError, StoreError
from digitops.serving.app import create_app
from digitops.serving.metrics import drop_multiprocess_dir, new_multiprocess_dir
from digitops.serving.predictor import load_predictor
from digitops.serving.rollout import RolloutSettings
from digitops.store.writer import StoreWriter

MODEL_ENV = "DIGITOPS_MODEL"
STORE_ENV = "DIGITOPS_STORE"
STORE_CAP_ENV = "DIGITOPS_STORE_CAP_GIB"  # a local store's size cap (default: the writer's)
CHALLENGER_ENV = "DIGITOPS_CHALLENGER"
ROLLOUT_ENV = "DIGITOPS_ROLLOUT"
CANARY_SHARE_ENV = "DIGITOPS_CANARY_SHARE"
PROTOCOL = "digitops.serving.protocol:LimitedHttpToolsProtocol"
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this long
GRACEFUL_SHUTDOWN_S = 10  # requests in flight get this long to finish on SIGTERM


def app_from_env() -> FastAPI:
    """The app for the model and store the environment names (loaded before serving)."""
    source = os.environ.get(MODEL_ENV)
    if not source:
        raise SystemExit(f"set {MODEL_ENV} to a model directory or a models:/ URI")
    return create_app(
        load_predictor(source), open_store_writer(os.environ.get(STORE_ENV)), rollout_from_env()
    )


def rollout_from_env() -> RolloutSettings | None:
    """The challenger the environment names, or None."""
    source = os.environ.get(CHALLENGER_ENV)
    if not source:
        return None
    share = os.environ.get(CANARY_SHARE_ENV, "0.1")
    try:
        canary_share = float(share)
    except ValueError:
        raise ModelError(f"{CANARY_SHARE_ENV}={share!r}: not a number") from None
    mode: Any = os.environ.get(ROLLOUT_ENV, "shadow")
    return RolloutSettings(source, mode, canary_share)


def open_store_writer(uri: str | None) -> StoreWriter | None:
    """The service's writer for the store at `uri` (a local path resolved), or None; its cap
    from `$DIGITOPS_STORE_CAP_GIB` when set."""
    if not uri:
        return None
    where = uri if uri.startswith("s3://") else str(Path(uri).resolve())
    cap = os.environ.get(STORE_CAP_ENV)
    if cap is None:
        return StoreWriter(where, "service")
    try:
        cap_bytes = int(float(cap) * 2**30)
    except ValueError:
        raise StoreError(f"{STORE_CAP_ENV}={cap!r}: not a number of GiB") from None
    if cap_bytes <= 0:
        raise StoreError(f"{STORE_CAP_ENV}={cap!r}: the cap must be above 0")
    return StoreWriter(where, "service", cap_bytes=cap_bytes)


def serve(
    model: str,
    host: str,
    port: int,
    workers: int,
    store: str | None,
    announce: Callable[[str], Any] = print,
    rollout: RolloutSettings | None = None,
) -> None:
    """Run the service with uvicorn (blocks). The model and the store open first, so a bad one
    fails here (`ModelError`, `StoreError`)."""
    import uvicorn

    predictor = load_predictor(model)
    writer = open_store_writer(store)
    announce(
        f"serving {predictor.name} version {predictor.version} ({predictor.precision}) "
        f"on http://{host}:{port}"
    )
    if writer is not None:
        announce(f"keeping every prediction in {writer.uri}")
    if rollout is not None:
        share = f" ({rollout.canary_share:.0%} of clients)" if rollout.mode == "canary" else ""
        announce(f"challenger: {rollout.source}, {rollout.mode}{share}")
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "http": PROTOCOL,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
    }
    # Workers' metrics meet in a directory made for this run (named before any worker imports
    # prometheus_client); one process needs none.
    made = new_multiprocess_dir() if workers > 1 else None
    try:
        if workers == 1:
            uvicorn.run(create_app(predictor, writer, rollout), **options)
            return
        # Several workers are separate processes: each builds its app from the environment.
        os.environ[MODEL_ENV] = model
        if writer is not None:
            os.environ[STORE_ENV] = writer.uri
        if rollout is not None:
            os.environ[CHALLENGER_ENV] = rollout.source
            os.environ[ROLLOUT_ENV] = rollout.mode
            os.environ[CANARY_SHARE_ENV] = str(rollout.canary_share)
        uvicorn.run("digitops.serving.main:app_from_env", factory=True, workers=workers, **options)
    finally:
        if made is not None:
            drop_multiprocess_dir(made)


def main() -> None:
    """`python -m digitops.serving.main`: the service as the environment configures it."""
    model = os.environ.get(MODEL_ENV)
    if not model:
        raise SystemExit(f"set {MODEL_ENV} to a model directory or a models:/ URI")
    serve(
        model,
        host=os.environ.get("HOST", "0.0.0.0"),  # in a container, every interface is its own
        port=int(os.environ.get("PORT", "8000")),
        workers=int(os.environ.get("WORKERS", "1")),
        store=os.environ.get(STORE_ENV) or None,
        rollout=rollout_from_env(),
    )


if __name__ == "__main__":
    main()
