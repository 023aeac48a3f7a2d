"""The FastAPI prediction service: validate, call the predictor, shape the response.

`POST /predict` takes one image (multipart field `file`, or JSON `{"image": "<base64>"}`),
`POST /predict/batch` up to `MAX_BATCH` (multipart `files`, or JSON `{"images": [...]}`).
With a request store, each answer carries a `request_id`, and `POST /feedback` labels it.
Bad input of any kind is a 4xx with `{"error": "..."}`; the service keeps running.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import anyio
import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from digitops.serving import metrics
from digitops.serving.explain import STRIDE, WINDOW, occlusion, overlay_png
from digitops.serving.feedback import add_feedback_routes
from digitops.serving.label_studio import add_label_studio_routes
from digitops.serving.predictor import Prediction, Predictor, ServedModel
from digitops.serving.preprocess import ImageError, header_pixels, preprocess
from digitops.serving.recorder import Recorder
from digitops.serving.rollout import CLIENT_HEADER, Challenger, RolloutSettings
from digitops.store.writer import StoreWriter

logger = logging.getLogger(__name__)

MAX_BODY = 10 * 1024 * 1024  # bytes in one request
MAX_BATCH = 64
PREDICT_THREADS = 2  # images decoded and predicted at once, per worker process
INLINE_PIXELS = 512 * 512  # one image this small is answered on the event loop (about 1-3 ms)
REFRESH_ENV = "DIGITOPS_MODEL_REFRESH_S"
DEFAULT_REFRESH_S = 15.0  # how often a service on an alias checks where the alias points


class Answer(BaseModel):
    """A prediction as the API returns it."""

    digit: str
    confidence: float
    probabilities: dict[str, float]
    top3: list[dict[str, Any]]
    unsure: bool = Field(
        description="the calibrated confidence is below the service's floor "
        "(--confidence-floor): `digit` is only the best guess; ask the user"
    )
    model_version: str
    request_id: str | None = Field(
        description="names this prediction in the request store (for POST /feedback); null "
        "when the service keeps no store or could not write to it"
    )


class BatchAnswer(BaseModel):
    predictions: list[Answer]


class ExplainAnswer(BaseModel):
    """What made the model answer: an occlusion map of the image as the model saw it."""

    digit: str = Field(description="the predicted digit")
    confidence: float
    explained: str = Field(description="the digit whose evidence the map shows")
    model_version: str
    method: str = Field(description="occlusion: 4×4 windows, stride 2, blanked to 0")
    attribution: list[list[float]] = Field(
        description="28×28: how much the explained digit's logit drops when the pixel is blanked"
    )
    overlay_png: str = Field(description="the digit with the map over it, base64 PNG")


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


def create_app(
    predictor: Predictor,
    store: StoreWriter | None = None,
    rollout: RolloutSettings | None = None,
) -> FastAPI:
    """The app serving `predictor`; with `store`, every prediction is kept there and can be
    labeled through /feedback; with `rollout`, a challenger version gets shadow or canary
    traffic (`digitops.serving.rollout`). A predictor loaded through an alias follows it, and
    live accuracy is read from the store's labels, every `$DIGITOPS_MODEL_REFRESH_S` s (default
    15)."""
    served = ServedModel(predictor)
    challenger = Challenger(rollout) if rollout is not None else None
    recorder = Recorder(store) if store is not None else None
    every = float(os.environ.get(REFRESH_ENV, DEFAULT_REFRESH_S))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if challenger is not None:  # before the first request, as the champion is
            await anyio.to_thread.run_sync(challenger.refresh)
        async with anyio.create_task_group() as tasks:
            if served.alias is not None:
                tasks.start_soon(_follow, served.refresh, every)
            if challenger is not None:
                tasks.start_soon(_follow, challenger.refresh, every)
            if recorder is not None:
                tasks.start_soon(_measure, recorder, every)
            yield
            tasks.cancel_scope.cancel()

    app = FastAPI(
        title="digitops",
        summary="Handwritten-digit recognition",
        version=predictor.version,
        lifespan=lifespan,
    )
    # Decoding and inference of anything larger than one small image run on worker threads, at
    # most PREDICT_THREADS at a time: the event loop stays free to answer /health and to read
    # other requests while predictions queue. One small image (the common case: a drawn digit)
    # is answered on the loop, where it costs less than the hop to a thread.
    limiter = anyio.CapacityLimiter(PREDICT_THREADS)
    _answer_errors_as_json(app)

    def versions(client: str) -> tuple[Predictor, Predictor | None, bool]:
        """Who answers `client` (the champion, or the challenger for a canary client), the
        shadow version that predicts beside it (shadow mode) if any, and whether it is the
        canary."""
        predictor = served.predictor  # the whole request answers with one version
        other = challenger.active(predictor) if challenger is not None else None
        if other is not None and challenger is not None and challenger.settings.mode == "canary":
            canary = challenger.canary(client)
            return (other if canary else predictor), None, canary  # canary mode shadows nobody
        return predictor, other, False

    def answer(images: list[bytes], client: str) -> list[dict[str, Any]]:
        started = time.perf_counter()
        predictor, other, canary = versions(client)
        if canary:
            metrics.CHALLENGER.labels("canary").inc(len(images))
        shadow = None
        batch = np.stack([_preprocess(data, i, len(images)) for i, data in enumerate(images)])
        predictions, embeddings = predictor.predict_with_embeddings(batch)
        if other is not None:  # shadow mode: predicted and kept, never returned
            try:
                shadow = (other.predict(batch), other.version)
                metrics.CHALLENGER.labels("shadow").inc(len(images))
            except Exception:  # onnxruntime raises its own types; the answer must not fail
                logger.exception("shadow version %s failed; answered without it", other.version)
                metrics.CHALLENGER.labels("shadow-failed").inc(len(images))
        ids: list[str | None] = [None] * len(predictions)
        if recorder is not None:  # kept before the answer goes out: an answered id is stored
            ids = recorder.record(batch, images, predictions, embeddings, predictor, shadow)
        metrics.LATENCY.observe(time.perf_counter() - started)
        metrics.PREDICTIONS.inc(len(predictions))
        metrics.UNSURE.inc(sum(p.unsure for p in predictions))
        return [_shape(p, predictor.version, i) for p, i in zip(predictions, ids, strict=True)]

    async def answered(request: Request, images: list[bytes]) -> list[dict[str, Any]]:
        client = _client(request)
        if len(images) == 1 and (header_pixels(images[0]) or 0) <= INLINE_PIXELS:
            return answer(images, client)  # a millisecond or two: a thread hop would cost more
        return await anyio.to_thread.run_sync(answer, images, client, limiter=limiter)

    async def predict(request: Request) -> Response:
        """Predict the digit in one image."""
        return _json((await answered(request, await _images(request, single=True)))[0])

    async def predict_batch(request: Request) -> Response:
        """Predict the digits in up to 64 images."""
        images = await _images(request, single=False)
        return _json({"predictions": await answered(request, images)})

    for path, endpoint, documented, single in (
        ("/predict", predict, Answer, True),
        ("/predict/batch", predict_batch, BatchAnswer, False),
    ):
        app.router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            response_model=documented,
            responses=ERRORS,
            openapi_extra=_body(single),
            route_class_override=_RequestRoute,
        )

    def explain(data: bytes, digit: str | None, client: str) -> ExplainAnswer:
        predictor, _, _ = versions(client)  # the version that answers this client's /predict
        image = _preprocess(data, 0, 1)
        names = predictor.class_names
        if digit is not None and digit not in names:
            raise ImageError(f"'{digit}' is not a class of this model ({', '.join(names)})")
        target = names.index(digit) if digit is not None else None
        found = occlusion(predictor.classifier, image, target)
        (prediction,) = predictor.predict(image[None])
        return ExplainAnswer(
            digit=prediction.digit,
            confidence=prediction.confidence,
            explained=names[found.target],
            model_version=predictor.version,
            method=f"occlusion {WINDOW}x{WINDOW}, stride {STRIDE}",
            attribution=np.round(found.attribution, 5).tolist(),
            overlay_png=base64.b64encode(overlay_png(image, found.attribution)).decode(),
        )

    @app.post("/explain", response_model=ExplainAnswer, responses=ERRORS, openapi_extra=_body(True))
    async def explain_image(request: Request, digit: str | None = None) -> ExplainAnswer:
        """Why the model answers what it does: an occlusion map of one image (`?digit=7`
        explains another digit than the predicted one)."""
        (data,) = await _images(request, single=True)
        client = _client(request)
        return await anyio.to_thread.run_sync(explain, data, digit, client, limiter=limiter)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        """Readiness: the model is loaded (it is loaded before the server accepts requests)."""
        return {"status": "ready", "model_version": served.predictor.version}

    @app.get("/model")
    async def model() -> dict[str, Any]:
        """The model being served."""
        predictor = served.predictor
        other = challenger.active(predictor) if challenger is not None else None
        return {
            "name": predictor.name,
            "version": predictor.version,
            "source": predictor.source,
            "precision": predictor.precision,
            "classes": predictor.class_names,
            "metrics": predictor.metrics,
            "challenger": None
            if other is None or challenger is None
            else {
                "version": other.version,
                "source": other.source,
                "mode": challenger.settings.mode,
                "canary_share": challenger.settings.canary_share,
            },
        }

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        content, media_type = metrics.exposition()
        return Response(content, media_type=media_type)

    add_feedback_routes(app, served, recorder)
    add_label_studio_routes(app, served, recorder)
    page = resources.files("digitops.serving").joinpath("static/index.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    return app


async def _measure(recorder: Recorder, every_s: float) -> None:
    """Keep the live-accuracy gauges current (labels also arrive through other workers, other
    faces and Label Studio)."""
    while True:
        await anyio.to_thread.run_sync(recorder.measure)
        await anyio.sleep(every_s)


async def _follow(refresh: Callable[[], bool], every_s: float) -> None:
    """Keep a model on the version its alias names (a thread: loading a model blocks)."""
    while True:
        await anyio.sleep(every_s)
        await anyio.to_thread.run_sync(refresh)


def _answer_errors_as_json(app: FastAPI) -> None:
    """Every refusal, whoever raises it (our checks, Starlette's multipart parser, routing,
    validation), is `{"error": ...}` with its 4xx status and counted; a defect is a counted 500."""

    def refuse(status: int, message: str) -> JSONResponse:
        metrics.rejected(status)
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(ImageError)
    async def image_error(_: Request, exc: ImageError) -> JSONResponse:
        return refuse(exc.status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return refuse(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return refuse(422, f"invalid request: {exc.errors()[0].get('msg', 'bad value')}")

    @app.exception_handler(ClientDisconnect)
    async def gone(_: Request, __: ClientDisconnect) -> JSONResponse:
        return refuse(400, "the client disconnected before sending the whole request")

    @app.exception_handler(Exception)
    async def defect(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error", exc_info=exc)
        return refuse(500, "internal error (logged by the service)")


def _preprocess(data: bytes, index: int, count: int) -> np.ndarray:
    """One image of a request; in a batch, an error names the image it is about."""
    try:
        return preprocess(data)
    except ImageError as exc:
        if count == 1:
            raise
        raise ImageError(f"image {index}: {exc}", status=exc.status) from None


async def _images(request: Request, single: bool) -> list[bytes]:
    """The uploaded image files of a multipart or JSON request, as raw bytes."""
    # Checked here rather than in a middleware: Starlette's HTTP middleware costs about a
    # millisecond per request, a third of this service's budget.
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise ImageError(f"the request body is over {MAX_BODY // 2**20} MiB", status=413)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return await _multipart_files(request, "file" if single else "files", single)
    if kind == "application/json":
        body = b"".join([chunk async for chunk in _capped(request)])
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:  # also for nesting deeper than orjson's 1,024 levels
            raise ImageError("the body is not valid JSON (or is nested too deep)", 400) from None
        encoded = _json_images(parsed, single)
        return [_b64(item) for item in encoded]
    raise ImageError(
        "send multipart/form-data (a file) or application/json (base64), not "
        f"'{kind or 'no content type'}'",
        status=415,
    )


async def _multipart_files(request: Request, field: str, single: bool) -> list[bytes]:
    """The files in multipart `field`, parsed from the capped body stream (chunked or not)."""
    parser = MultiPartParser(
        request.headers,
        _capped(request),
        max_files=MAX_BATCH,
        max_fields=MAX_BATCH,
        max_part_size=MAX_BODY,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ImageError(f"the multipart body is malformed: {exc.message}", status=400) from None
    try:
        files = [u for u in form.getlist(field) if not isinstance(u, str)]
        if not files:
            raise ImageError(f"no file in the multipart field '{field}'", status=400)
        if single and len(files) > 1:
            raise ImageError("send one file to /predict; use /predict/batch for more", 400)
        return [await f.read() for f in files]
    finally:
        await form.close()


async def _capped(request: Request) -> AsyncGenerator[bytes, None]:
    """The body as it arrives, refusing more than `MAX_BODY` bytes whatever the client declared
    (a chunked upload has no Content-Length): nothing past the cap is read."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ImageError(f"the request body is over {MAX_BODY // 2**20} MiB", status=413)
        yield chunk


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


def _client(request: Request) -> str:
    """Who is asking, for the canary's sticky choice: the client header, else the address."""
    return request.headers.get(CLIENT_HEADER) or (request.client or ("", 0))[0]


def _b64(text: str) -> bytes:
    if text.startswith("data:") and "," in text:  # a data URL, as browsers produce
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("the image is not valid base64", status=400) from None


def _shape(prediction: Prediction, version: str, request_id: str | None) -> dict[str, Any]:
    """An `Answer` as JSON-ready values (built here, so no response model is validated again)."""
    return {
        "digit": prediction.digit,
        "confidence": prediction.confidence,
        "probabilities": prediction.probabilities,
        "top3": prediction.top3,
        "unsure": prediction.unsure,
        "model_version": version,
        "request_id": request_id,
    }


class _RequestRoute(APIRoute):
    """A route whose endpoint takes the request and returns a response itself. FastAPI documents
    it as any route (response model, errors, body); per request it skips solving the endpoint's
    parameters, which cost 8 % of a prediction (2026-12-03)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            response: Response = await endpoint(request)
            return response

        return handle


def _json(content: Any) -> Response:
    """A JSON answer encoded by orjson. The predict routes' `response_model` documents it;
    FastAPI's own path would validate the answer against that model again, then encode it."""
    return Response(orjson.dumps(content), media_type="application/json")
