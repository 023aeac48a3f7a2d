"""A second peer for `serve_latency.py`: the same model and preprocessing behind KServe's Python
model server (`kserve.Model` + `kserve.ModelServer`), in its own environment (tools/kserve).

    tools/kserve/.venv/bin/python benchmarks/kserve_peer.py MODEL_DIR PORT [--workers 2]

Serves on 127.0.0.1:PORT. KServe's v1 protocol puts the model under its name:
`POST /v1/models/digit:predict` takes the same JSON body as digitops' `/predict`
(`{"image": "<base64>"}`, content-type application/json) and answers with the digit, confidence,
probabilities and top 3, so every server does the same work per request. Ready when
`GET /v1/models/digit` answers 200. `--workers` is KServe's: uvicorn processes that share the
socket (spawned), each loading its own ONNX session, behind a parent that supervises them.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import warnings
from typing import Any

import numpy as np
from fastapi.exceptions import FastAPIDeprecationWarning
from kserve import Model, ModelServer
from kserve.errors import InvalidInput
from kserve.logging import KSERVE_LOG_CONFIG, configure_logging
from kserve.protocol.rest.server import RESTServer

from digitops.errors import DigitopsError
from digitops.serving.predictor import Predictor, load_predictor
from digitops.serving.preprocess import preprocess

NAME = "digit"
HOST = "127.0.0.1"

# Quiet, like the other servers: warnings and errors only, no access log or per-request timings.
# Configured at import, so the spawned workers (which import this module again) keep it: KServe
# configures its default (INFO) logging only where none is set up yet.
_QUIET = copy.deepcopy(KSERVE_LOG_CONFIG)
for _logger in _QUIET["loggers"].values():
    _logger["level"] = "WARNING"
configure_logging(_QUIET)
# KServe answers with ORJSONResponse, which the pinned FastAPI deprecates with a warning on every
# request: printing it would be work the other servers do not do.
warnings.filterwarnings("ignore", category=FastAPIDeprecationWarning)

# KServe's REST server binds 0.0.0.0 with no option to change it (a pod listens on every
# interface); the benchmark stays on the loopback interface. The bind happens in the parent,
# before the workers start, so this touches no request.
_rest_init = RESTServer.__init__


def _loopback_init(self: RESTServer, *args: Any, **kwargs: Any) -> None:
    _rest_init(self, *args, **kwargs)
    self.config.host = HOST


RESTServer.__init__ = _loopback_init  # type: ignore[method-assign]


class DigitModel(Model):
    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.predictor: Predictor | None = None

    def load(self) -> bool:
        self.predictor = load_predictor(self.model_dir)
        self.ready = True
        return self.ready

    # The workers are spawned and get the model pickled; an ONNX session does not pickle, so
    # each worker loads its own (as LitServe's `setup` does per worker).
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "predictor": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.ready:
            self.load()

    def preprocess(self, payload: dict, headers: dict[str, str] | None = None) -> np.ndarray:
        try:
            return preprocess(base64.b64decode(payload["image"]))[None]
        except (KeyError, TypeError, binascii.Error, DigitopsError) as exc:
            raise InvalidInput(f"not a digit image: {exc}") from None  # KServe answers 400

    def predict(self, payload: np.ndarray, headers: dict[str, str] | None = None) -> dict:
        assert self.predictor is not None
        (answer,) = self.predictor.predict(payload)
        return {
            "digit": answer.digit,
            "confidence": answer.confidence,
            "probabilities": answer.probabilities,
            "top3": answer.top3,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("port", type=int)
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    args = parser.parse_args()

    model = DigitModel(NAME, args.model_dir)
    model.load()
    ModelServer(
        http_port=args.port,
        workers=args.workers,
        enable_grpc=False,  # HTTP only, like the other servers (gRPC would take port 8081)
        enable_latency_logging=False,
        grace_period=5,
    ).start([model])


if __name__ == "__main__":
    main()
