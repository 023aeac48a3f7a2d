"""The FastAPI prediction service: validate, call the predictor, shape the response.

`POST /predict` takes one image (multipart field `file`, or JSON `{"image": "<base64>"}`),
`POST /predict/batch` up to `MAX_BATCH` (multipart `files`, or JSON `{"images": [...]}`).
Bad input of any kind is a 4xx with `{"error": "..."}`; the service keeps running.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field

from digitops.serving.predictor import Prediction, Predictor
from digitops.serving.preprocess import ImageError, preprocess
from digitops.serving.request_log import RequestLog

MAX_BODY = 10 * 1024 * 1024  # bytes in one request
MAX_BATCH = 64


class Answer(BaseModel):
    """A prediction as the API returns it."""

    digit: str
    confidence: float
    probabilities: dict[str, float]
    top3: list[dict[str, Any]]
    model_version: str


class BatchAnswer(BaseModel):
    predictions: list[Answer]


class ImageBody(BaseModel):
    image: str = Field(description="the image file (PNG, JPEG, BMP, WebP), base64-encoded")


class BatchBody(BaseModel):
    images: list[str] = Field(description="base64-encoded image files", max_length=MAX_BATCH)


class Failure(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Failure} for code in (400, 413, 415, 422)
}


def _body(single: bool) -> dict[str, Any]:
    """The request body in the OpenAPI document (the handlers parse it themselves, so that
    multipart and JSON share one endpoint and every refusal is a clear 4xx)."""
    field, json_model = ("file", ImageBody) if single else ("files", BatchBody)
    upload = {"type": "string", "format": "binary"}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [field],
                        "properties": {
                            field: upload if single else {"type": "array", "items": upload}
                        },
                    }
                },
                "application/json": {"schema": json_model.model_json_schema()},
            },
        }
    }


def create_app(predictor: Predictor, request_log: Path | None = None) -> FastAPI:
    """The app serving `predictor`; with `request_log`, every prediction is recorded there."""
    app = FastAPI(
        title="digitops",
        summary="Handwritten-digit recognition",
        version=predictor.version,
    )
    log = RequestLog(request_log) if request_log else None
    metrics = _Metrics()

    @app.exception_handler(ImageError)
    async def image_error(_: Request, exc: ImageError) -> JSONResponse:
        metrics.errors.labels(str(exc.status)).inc()
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    def answer(images: list[bytes]) -> list[Answer]:
        started = time.perf_counter()
        batch = np.stack([preprocess(data) for data in images])
        predictions = predictor.predict(batch)
        if log is not None:
            log.append(batch, predictions, predictor.version)
        metrics.latency.observe(time.perf_counter() - started)
        metrics.predictions.inc(len(predictions))
        return [_shape(p, predictor.version) for p in predictions]

    @app.post("/predict", response_model=Answer, responses=ERRORS, openapi_extra=_body(True))
    async def predict(request: Request) -> Answer:
        """Predict the digit in one image."""
        (data,) = await _images(request, single=True)
        return answer([data])[0]

    @app.post(
        "/predict/batch", response_model=BatchAnswer, responses=ERRORS, openapi_extra=_body(False)
    )
    async def predict_batch(request: Request) -> BatchAnswer:
        """Predict the digits in up to 64 images."""
        return BatchAnswer(predictions=answer(await _images(request, single=False)))

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        """Readiness: the model is loaded (it is loaded before the server accepts requests)."""
        return {"status": "ready", "model_version": predictor.version}

    @app.get("/model")
    async def model() -> dict[str, Any]:
        """The model being served."""
        return {
            "name": predictor.name,
            "version": predictor.version,
            "source": predictor.source,
            "classes": predictor.class_names,
            "metrics": predictor.metrics,
        }

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    page = resources.files("digitops.serving").joinpath("static/index.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    return app


async def _images(request: Request, single: bool) -> list[bytes]:
    """The uploaded image files of a multipart or JSON request, as raw bytes."""
    # Checked here rather than in a middleware: Starlette's HTTP middleware costs about a
    # millisecond per request, a third of this service's budget.
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise ImageError(f"the request body is over {MAX_BODY // 2**20} MiB", status=413)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form(max_files=MAX_BATCH, max_part_size=MAX_BODY)
        field = "file" if single else "files"
        uploads = form.getlist(field)
        files = [u for u in uploads if not isinstance(u, str)]
        if not files:
            raise ImageError(f"no file in the multipart field '{field}'", status=400)
        if single and len(files) > 1:
            raise ImageError("send one file to /predict; use /predict/batch for more", 400)
        return [await f.read() for f in files]
    if kind == "application/json":
        try:
            body = json.loads(await _read_capped(request))
        except ValueError:
            raise ImageError("the body is not valid JSON", status=400) from None
        encoded = _json_images(body, single)
        return [_b64(item) for item in encoded]
    raise ImageError(
        "send multipart/form-data (a file) or application/json (base64), not "
        f"'{kind or 'no content type'}'",
        status=415,
    )


async def _read_capped(request: Request) -> bytes:
    """The body, refusing more than `MAX_BODY` bytes even when no Content-Length was sent."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ImageError(f"the request body is over {MAX_BODY // 2**20} MiB", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _json_images(body: Any, single: bool) -> list[str]:
    from pydantic import ValidationError

    try:
        if single:
            return [ImageBody.model_validate(body).image]
        images = BatchBody.model_validate(body).images
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "body"
        raise ImageError(f"invalid JSON body at '{where}': {exc.errors()[0]['msg']}") from None
    if not images:
        raise ImageError("'images' is empty", status=400)
    return images


def _b64(text: str) -> bytes:
    if text.startswith("data:") and "," in text:  # a data URL, as browsers produce
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("the image is not valid base64", status=400) from None


def _shape(prediction: Prediction, version: str) -> Answer:
    return Answer(
        digit=prediction.digit,
        confidence=prediction.confidence,
        probabilities=prediction.probabilities,
        top3=prediction.top3,
        model_version=version,
    )


class _Metrics:
    """Prometheus metrics of one app (its own registry, so tests can create many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.predictions = Counter(
            "digitops_predictions", "Images predicted", registry=self.registry
        )
        self.errors = Counter(
            "digitops_rejected_requests",
            "Requests refused, by status",
            ["status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "digitops_predict_seconds",
            "Preprocess + inference time per request",
            registry=self.registry,
        )
