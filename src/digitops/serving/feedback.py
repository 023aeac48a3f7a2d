"""`POST /feedback` and `POST /feedback/batch`: users correct (or confirm) predictions.

A label names the request it is about (`request_id`, from the prediction's answer) and the digit
the image really shows; `source` is a free tag for who gave it (`web`, `api`, a user name...).
Every label is kept with its time, the version that predicted and what it predicted. A request
that already has a label is refused (409) unless the body says `"replace": true`; the earlier
label stays in the store either way. A batch is kept all or none.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from digitops.errors import StoreError
from digitops.serving import metrics
from digitops.serving.predictor import ServedModel
from digitops.serving.preprocess import ImageError
from digitops.serving.recorder import Recorder
from digitops.store.writer import BadLabel, Correction, LabelConflict, UnknownRequest

MAX_LABELS = 256  # labels in one batch
MAX_FEEDBACK_BODY = 256 * 1024


class Label(BaseModel):
    """One correction."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(description="the `request_id` of the prediction's answer")
    digit: int | str = Field(description='the class the image really shows, e.g. 7 or "7"')
    source: str = Field(
        "api", min_length=1, max_length=64, pattern=r"^[\w.:@/-]+$", description="who labeled"
    )
    replace: bool = Field(False, description="replace an earlier label of this request")


class Labels(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[Label] = Field(min_length=1, max_length=MAX_LABELS)


class Kept(BaseModel):
    """A label as the store keeps it."""

    request_id: str
    image: str
    label: str
    source: str
    time: float
    model_name: str
    model_version: str
    predicted: str
    request_time: float
    replaces: str | None


class KeptBatch(BaseModel):
    labels: list[Kept]


class Refusal(BaseModel):
    error: str
    existing: Kept | None = Field(None, description="on 409: the label the request already has")


def add_feedback_routes(app: FastAPI, served: ServedModel, recorder: Recorder | None) -> None:
    """Register the feedback endpoints on `app` (a service without a store answers 404)."""
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": Refusal} for code in (400, 404, 409, 413, 415, 422, 503)
    }

    async def keep(request: Request, model: type[BaseModel]) -> list[dict[str, Any]]:
        if recorder is None:
            raise ImageError("this service keeps no request store (start it with --store)", 404)
        body = await json_body(request)
        try:
            parsed = model.model_validate(body)
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "body"
            raise ImageError(f"invalid label at '{where}': {exc.errors()[0]['msg']}") from None
        items = parsed.labels if isinstance(parsed, Labels) else [parsed]
        corrections = [
            Correction(i.request_id, str(i.digit), i.source, i.replace)
            for i in items
            if isinstance(i, Label)
        ]
        classes = served.predictor.class_names
        kept = await anyio.to_thread.run_sync(recorder.store.label, corrections, classes)
        metrics.LABELS.inc(len(kept))
        await anyio.to_thread.run_sync(recorder.measure)
        return kept

    @app.post(
        "/feedback",
        status_code=201,
        response_model=Kept,
        responses=errors,
        openapi_extra=_body(Label.model_json_schema()),
    )
    async def feedback(request: Request) -> Any:
        """Label one prediction: `{"request_id": ..., "digit": 7, "source": "web"}`."""
        return (await keep(request, Label))[0]

    batch = {
        "type": "object",
        "required": ["labels"],
        "additionalProperties": False,
        "properties": {
            "labels": {
                "type": "array",
                "items": Label.model_json_schema(),
                "minItems": 1,
                "maxItems": MAX_LABELS,
            }
        },
    }

    @app.post(
        "/feedback/batch",
        status_code=201,
        response_model=KeptBatch,
        responses=errors,
        openapi_extra=_body(batch),
    )
    async def feedback_batch(request: Request) -> Any:
        """Label up to 256 predictions at once, all or none: `{"labels": [...]}`."""
        return {"labels": await keep(request, Labels)}

    @app.exception_handler(StoreError)
    async def store_error(_: Request, exc: StoreError) -> JSONResponse:
        status, extra = 503, {}
        if isinstance(exc, UnknownRequest):
            status = 404
        elif isinstance(exc, BadLabel):
            status = 422
        elif isinstance(exc, LabelConflict):
            status, extra = 409, {"existing": exc.existing} if exc.existing else {}
        metrics.rejected(status)
        return JSONResponse({"error": str(exc), **extra}, status_code=status)


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    """The JSON body in the OpenAPI document (the handlers parse it, so that every refusal is
    one clear 4xx: malformed JSON 400, a wrong field 422)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def json_body(request: Request, limit: int = MAX_FEEDBACK_BODY) -> Any:
    """The parsed JSON body, read no further than `limit` bytes; 415, 413 or 400 otherwise."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ImageError(f"send application/json, not '{kind or 'no content type'}'", 415)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ImageError(f"the body is over {limit // 1024} KiB", 413)
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ImageError("the body is not valid JSON (or is nested too deep)", 400) from None
