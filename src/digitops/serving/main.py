"""Entry points that build the app from the environment, for uvicorn workers and containers.

    DIGITOPS_MODEL=models:/digit-classifier@production uvicorn --factory \\
        digitops.serving.main:app_from_env --workers 2

`DIGITOPS_MODEL` names the model (a directory, `models:/...` or `runs:/...`);
`DIGITOPS_REQUEST_LOG` is where predictions are recorded (unset: not recorded).
"""

from __future__ import annotations

import os
from pathlib import Path

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
