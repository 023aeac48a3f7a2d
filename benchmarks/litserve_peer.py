"""The peer in `serve_latency.py`: the same model and preprocessing behind LitServe.

    python benchmarks/litserve_peer.py MODEL_DIR PORT

Accepts the same JSON body as digitops' `/predict` (`{"image": "<base64>"}`) and answers with
the digit, confidence and probabilities, so both servers do the same work per request.
"""

from __future__ import annotations

import base64
import sys

import litserve as ls

from digitops.serving.predictor import load_predictor
from digitops.serving.preprocess import preprocess


class DigitAPI(ls.LitAPI):
    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model

    def setup(self, device: str) -> None:
        self.predictor = load_predictor(self.model)

    def decode_request(self, request: dict) -> bytes:
        return base64.b64decode(request["image"])

    def predict(self, data: bytes) -> dict:
        (answer,) = self.predictor.predict(preprocess(data)[None])
        return {
            "digit": answer.digit,
            "confidence": answer.confidence,
            "probabilities": answer.probabilities,
            "top3": answer.top3,
        }

    def encode_response(self, output: dict) -> dict:
        return output


if __name__ == "__main__":
    model, port = sys.argv[1], int(sys.argv[2])
    server = ls.LitServer(DigitAPI(model), accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning")
