"""Entry points that build the app from the environment, for uvicorn workers and containers.

    DIGITOPS_MODEL=models:/digit-classifier@production uvicorn --factory \\
        digitops.serving.main:app_from_env --workers 2

`DIGITOPS_MODEL` names the model (a directory, `models:/...` or `runs:/...`);
`DIGITOPS_REQUEST_LOG` is where predictions are recorded (unset: not recorded).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from digitops.serving.app import create_app
from digitops.serving.predictor import load_predictor

MODEL_ENV = "DIGITOPS_MODEL"
REQUEST_LOG_ENV = "DIGITOPS_REQUEST_LOG"


def app_from_env() -> FastAPI:
    """The app for the model and request log the environment names (loaded before serving)."""
    source = os.environ.get(MODEL_ENV)
    if not source:
        raise SystemExit(f"set {MODEL_ENV} to a model directory or a models:/ URI")
    log = os.environ.get(REQUEST_LOG_ENV)
    return create_app(load_predictor(source), Path(log) if log else None)


def serve(
    model: str,
    host: str,
    port: int,
    workers: int,
    request_log: Path | None,
    announce: Callable[[str], Any] = print,
) -> None:
    """Run the service with uvicorn (blocks). The model loads first, so a bad one fails here."""
    import uvicorn

    predictor = load_predictor(model)
    announce(f"serving {predictor.name} version {predictor.version} on http://{host}:{port}")
    log = request_log.resolve() if request_log is not None else None
    options: dict[str, Any] = {"host": host, "port": port, "log_level": "warning"}
    if workers == 1:
        uvicorn.run(create_app(predictor, log), **options)
        return
    # Several workers are separate processes: each builds its app from the environment.
    os.environ[MODEL_ENV] = model
    if log is not None:
        os.environ[REQUEST_LOG_ENV] = str(log)
    uvicorn.run("digitops.serving.main:app_from_env", factory=True, workers=workers, **options)
