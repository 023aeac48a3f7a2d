"""AWS Lambda entry point: images uploaded to S3 and HTTP requests, answered by the same model.

    handler(event, context)   # the function's CMD: digitops.serving.aws_lambda.handler

- S3 `ObjectCreated` records: read the image, predict, and write the answer (the same JSON as
  `POST /predict`) to `<DIGITOPS_RESULTS_PREFIX><key>.json`, by default `results/<key>.json`.
  A result is never an input: keys under the results prefix or ending in `.json` are skipped, and
  the stack's notifications only match image suffixes under the uploads prefix. An upload that is
  not a usable image gets `{"error": ...}` as its result instead of an exception, so Lambda does
  not retry it; S3 failures other than a vanished object do raise, and Lambda retries those.
- Any other event is HTTP (a Function URL or API Gateway), served by the FastAPI app of
  `digitops serve` through Mangum: same routes, same answers, same 4xx errors.

`DIGITOPS_MODEL` is a model directory baked into the image (default `/opt/model`) or an
`s3://bucket/prefix/` holding `model.onnx` and `model.json`, fetched once per cold start.
`DIGITOPS_PRECISION=int8` answers with the int8 model beside them (`model.int8.onnx`, fetched too).
`DIGITOPS_STORE` (e.g. `s3://bucket/store/`) is the request store both kinds of events keep
their predictions in, as the service does: answers then carry a `request_id`.
Only what an event needs is imported: boto3 for S3 records, FastAPI and Mangum for HTTP.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus, urlparse

from digitops.errors import ModelError
from digitops.model.artifact import MODEL_INT8, Precision
from digitops.serving.predictor import Predictor, load_predictor, precision_from_env
from digitops.serving.preprocess import ImageError, preprocess
from digitops.serving.recorder import Recorder
from digitops.store.writer import StoreWriter

MODEL_ENV = "DIGITOPS_MODEL"
STORE_ENV = "DIGITOPS_STORE"
RESULTS_ENV = "DIGITOPS_RESULTS_PREFIX"
DEFAULT_MODEL = "/opt/model"
DEFAULT_RESULTS = "results/"
MAX_OBJECT = 10 * 1024 * 1024  # bytes, as for one HTTP request to the service
MODEL_FILES = ("model.onnx", "model.json")

log = logging.getLogger(__name__)
log.setLevel(logging.INFO)


class LambdaHandler:
    """Answers S3 and HTTP events with one loaded predictor."""

    def __init__(
        self,
        predictor: Predictor,
        results_prefix: str = DEFAULT_RESULTS,
        store: StoreWriter | None = None,
    ) -> None:
        if not results_prefix:
            raise ValueError("the results prefix must not be empty: results would re-trigger")
        self.predictor = predictor
        self.results_prefix = results_prefix
        self.store = store
        self.recorder = Recorder(store) if store is not None else None
        self._asgi: Any = None  # the service's app behind Mangum, built on the first HTTP event

    def __call__(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        records = event.get("Records")
        if isinstance(records, list) and records and "s3" in records[0]:
            return {"results": [self._s3_record(record) for record in records]}
        return self._http(event, context)

    def _s3_record(self, record: dict[str, Any]) -> dict[str, Any]:
        bucket = record["s3"]["bucket"]["name"]
        key = unquote_plus(record["s3"]["object"]["key"])  # S3 URL-encodes keys in events
        if key.startswith(self.results_prefix) or key.endswith(".json"):
            log.info("skipped s3://%s/%s: a result, not an image", bucket, key)
            return {"key": key, "skipped": "a result, not an image"}
        answer = self._answer_object(bucket, key)
        result_key = f"{self.results_prefix}{key}.json"
        _s3().put_object(
            Bucket=bucket,
            Key=result_key,
            Body=json.dumps({"bucket": bucket, "key": key, **answer}).encode(),
            ContentType="application/json",
        )
        log.info("s3://%s/%s -> %s: %s", bucket, key, result_key, answer.get("digit", answer))
        return {"key": key, "result": result_key, **answer}

    def _answer_object(self, bucket: str, key: str) -> dict[str, Any]:
        """The prediction for one uploaded object, or `{"error": ...}` when it cannot be one."""
        client = _s3()
        try:
            obj = client.get_object(Bucket=bucket, Key=key)
        except client.exceptions.NoSuchKey:
            return {"error": "the object was deleted before it could be read"}
        if obj["ContentLength"] > MAX_OBJECT:
            obj["Body"].close()
            return {"error": f"the object is over {MAX_OBJECT // 2**20} MiB"}
        data = obj["Body"].read()
        try:
            image = preprocess(data)
        except ImageError as exc:
            return {"error": str(exc)}
        predictions, embeddings = self.predictor.predict_with_embeddings(image[None])
        request_id = None
        if self.recorder is not None:
            (request_id,) = self.recorder.record(
                image[None], [data], predictions, embeddings, self.predictor
            )
        return {
            **asdict(predictions[0]),
            "model_version": self.predictor.version,
            "request_id": request_id,
        }

    def _http(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if self._asgi is None:
            from mangum import Mangum

            from digitops.serving.app import create_app

            self._asgi = Mangum(create_app(self.predictor, self.store), lifespan="off")
        response: dict[str, Any] = self._asgi(event, context)
        return response


@cache
def _s3() -> Any:
    """One S3 client per container (honours AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)."""
    import boto3

    return boto3.client("s3")


def model_dir(source: str, precision: Precision = "fp32") -> Path:
    """The local directory of the model `source` names, downloading an `s3://` one first (with
    its int8 file at `precision` int8)."""
    if not source.startswith("s3://"):
        return Path(source)
    url = urlparse(source)
    prefix = url.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    target = Path(tempfile.mkdtemp(prefix="digitops-model-"))
    client = _s3()
    for name in (*MODEL_FILES, MODEL_INT8) if precision == "int8" else MODEL_FILES:
        try:
            client.download_file(url.netloc, prefix + name, str(target / name))
        except Exception as exc:  # botocore's errors: say which file, then stop the cold start
            raise ModelError(f"cannot fetch s3://{url.netloc}/{prefix}{name}: {exc}") from None
    return target


@cache
def _default() -> LambdaHandler:
    source = os.environ.get(MODEL_ENV, DEFAULT_MODEL)
    precision = precision_from_env()
    predictor = load_predictor(str(model_dir(source, precision)), precision=precision)
    if source.startswith("s3://"):
        predictor.source, predictor.name, predictor.version = source, "s3", source
    store = os.environ.get(STORE_ENV)
    return LambdaHandler(
        predictor,
        os.environ.get(RESULTS_ENV, DEFAULT_RESULTS),
        StoreWriter(store, "lambda") if store else None,
    )


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """The Lambda function: the model loads on the first event of each container."""
    return _default()(event, context)
