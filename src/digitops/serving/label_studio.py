"""Label Studio's ML-backend protocol: the service pre-annotates tasks for the people labeling.

In Label Studio: project → Settings → Model → Connect model, URL `http://<service>/label-studio`
(or `digitops labels connect`). Label Studio then calls

    GET  /label-studio/health    is the backend up
    POST /label-studio/setup     on connect and before predicting: answers the model version
    POST /label-studio/predict   {"tasks": [...], "label_config": ...} → one prediction per task

A prediction names the version that made it (`<model name>/<version>`, as `digitops labels
push` does), so Label Studio asks again only after the service moved to another version.
A task's image is, in order: the stored image of its `request_id` (what the model saw, from the
request store), a `data:` URI, or a file Label Studio serves (`/data/local-files/`,
`/data/upload/`) on the server the service is told about (`LABEL_STUDIO_URL`,
`LABEL_STUDIO_API_KEY`), without following redirects: the service fetches nothing else, and its
key goes nowhere else. A task whose image cannot be read gets no `result`, only the reason
(`error`): Label Studio keeps no prediction for it and asks again next time, and the call still
answers 200.
"""

from __future__ import annotations

import base64
import logging
import os
import urllib.parse
import urllib.request
from http.client import HTTPException
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from digitops.errors import DigitopsError
from digitops.labeling.tasks import Credentials, control_names, model_version, prediction
from digitops.serving.feedback import json_body
from digitops.serving.predictor import ServedModel
from digitops.serving.preprocess import ImageError, preprocess
from digitops.serving.recorder import Recorder
from digitops.store.layout import image_from_bytes
from digitops.store.reader import read_blob
from digitops.store.writer import UnknownRequest

log = logging.getLogger(__name__)

PREFIX = "/label-studio"
MAX_BODY = 16 * 2**20  # "Retrieve predictions" sends every selected task in one call
FILES = ("/data/local-files/", "/data/upload/")  # the paths Label Studio serves files under
MAX_IMAGE = 10 * 2**20
FETCH_TIMEOUT_S = 10.0


class Task(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class PredictBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    tasks: list[Task]
    label_config: str


def add_label_studio_routes(app: FastAPI, served: ServedModel, recorder: Recorder | None) -> None:
    """Mount the ML-backend protocol under `PREFIX`."""
    studio = _StudioFiles()

    def version() -> str:
        return model_version(served.predictor.name, served.predictor.version)

    @app.get(f"{PREFIX}/health", tags=["label-studio"])
    async def health() -> dict[str, str]:
        """Label Studio's health check of an ML backend."""
        return {"status": "UP", "model_class": "digitops", "model_version": version()}

    @app.post(f"{PREFIX}/setup", tags=["label-studio"])
    async def setup() -> dict[str, str]:
        """Label Studio's set-up call: the version whose predictions it will keep."""
        return {"model_version": version()}

    @app.post(f"{PREFIX}/predict", tags=["label-studio"])
    async def predict(request: Request) -> JSONResponse:
        """A pre-annotation for each task: the model's digit, its confidence as the score."""
        body = await json_body(request, MAX_BODY)
        try:
            parsed = PredictBody.model_validate(body)
            names = control_names(parsed.label_config)
        except ValueError as exc:  # ValidationError is a ValueError
            message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise ImageError(f"not a Label Studio predict request: {message}", 422) from None
        results = await anyio.to_thread.run_sync(_predict, served, recorder, studio, parsed, names)
        return JSONResponse({"results": results, "model_version": version()})


def _predict(
    served: ServedModel,
    recorder: Recorder | None,
    studio: _StudioFiles,
    body: PredictBody,
    names: tuple[str, str, str],
) -> list[dict[str, Any]]:
    predictor = served.predictor  # every task answered by one version
    version = model_version(predictor.name, predictor.version)
    choices, image, key = names
    images: list[np.ndarray] = []
    readable: list[int] = []
    results: list[dict[str, Any]] = [{} for _ in body.tasks]
    for i, task in enumerate(body.tasks):
        try:
            images.append(_image_of(task, key, recorder, studio))
            readable.append(i)
        except (DigitopsError, OSError, ValueError, KeyError, TypeError, HTTPException) as exc:
            log.warning("Label Studio task %s: no pre-annotation (%s)", task.id, exc)
            results[i] = {"model_version": version, "error": str(exc)}  # no result: not kept
    if images:
        for i, answer in zip(readable, predictor.predict(np.stack(images)), strict=True):
            results[i] = prediction(answer.digit, answer.confidence, version, (choices, image))
    return results


def _image_of(task: Task, key: str, recorder: Recorder | None, studio: _StudioFiles) -> np.ndarray:
    """The model's 28×28 float input for `task`."""
    request_id = task.data.get("request_id")
    if request_id and recorder is not None:
        try:
            record = recorder.store.find(str(request_id))
        except UnknownRequest:  # another store's request: read the image as any other
            pass
        else:
            stored = image_from_bytes(read_blob(recorder.store.backend, record["image_at"]))
            return stored.astype(np.float32) / 255.0
    value = task.data.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"the task has no '{key}' to read")
    if value.startswith("data:"):
        header, _, encoded = value.partition(",")
        if not header.endswith(";base64"):
            raise ValueError("a data: URI that is not base64")
        return preprocess(base64.b64decode(encoded, validate=True))
    return preprocess(studio.fetch(value))


class _StudioFiles:
    """Files Label Studio serves, on the server named in `LABEL_STUDIO_URL`, read with its API
    key (`LABEL_STUDIO_API_KEY`). Plain urllib: the Lambda image shares this app and has no
    httpx."""

    def __init__(self) -> None:
        self.url = os.environ.get("LABEL_STUDIO_URL", "").rstrip("/")
        self.credentials = Credentials(self.url, os.environ.get("LABEL_STUDIO_API_KEY", ""))
        self.opener = urllib.request.build_opener(_NoRedirects)

    def fetch(self, value: str) -> bytes:
        if not self.url:
            raise ValueError(
                "the image is on Label Studio; give the service LABEL_STUDIO_URL and "
                "LABEL_STUDIO_API_KEY to read it"
            )
        url = urllib.parse.urljoin(self.url + "/", value)
        where, home = urllib.parse.urlsplit(url), urllib.parse.urlsplit(self.url)
        path = urllib.parse.unquote(where.path)
        if (
            (where.scheme, where.netloc) != (home.scheme, home.netloc)
            or not path.startswith(tuple(home.path + prefix for prefix in FILES))
            or "\\" in path
            or {".", ".."} & set(path.split("/"))  # a proxy in front could resolve them
        ):
            raise ValueError(
                f"the image is not a file Label Studio serves at {self.url}; the service "
                "fetches nothing else"
            )
        request = urllib.request.Request(url, headers={"Authorization": self.credentials.header()})
        with self.opener.open(request, timeout=FETCH_TIMEOUT_S) as answer:
            data: bytes = answer.read(MAX_IMAGE + 1)
        if len(data) > MAX_IMAGE:
            raise ValueError(f"the image is over {MAX_IMAGE // 2**20} MiB")
        return data


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: urllib would send the key on to wherever it points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
