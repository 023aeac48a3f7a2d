"""The Lambda handler with the real S3 protocol (a moto server on 127.0.0.1) and real event
shapes: uploads get JSON results, bad uploads get error JSON, HTTP events answer like the
service."""

import json
from pathlib import Path

import boto3
import httpx
import pytest

from digitops.data.dataset import load_dataset
from digitops.errors import ModelError
from digitops.serving import aws_lambda
from digitops.serving.aws_lambda import LambdaHandler
from digitops.serving.predictor import load_predictor

from ..serving_helpers import (
    aws_env,
    function_url_event,
    png,
    running_moto,
    running_service,
    s3_event,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "digits"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """An S3 client on a fresh moto server, the environment pointing boto3 at it."""
    work = tmp_path_factory.mktemp("moto")
    with running_moto(work) as url, pytest.MonkeyPatch.context() as env:
        for name, value in aws_env(url).items():
            env.setenv(name, value)
        aws_lambda._s3.cache_clear()
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client
    aws_lambda._s3.cache_clear()


@pytest.fixture(scope="module")
def digits(mnist_slice: Path):
    test = load_dataset(mnist_slice).split("test")
    return test.images[:20], test.labels[:20]


@pytest.fixture(scope="module")
def handler(trained) -> LambdaHandler:
    return LambdaHandler(load_predictor(str(trained.model_dir)))


def upload(s3, key: str, body: bytes) -> dict:
    """Put `body` at `key` and return the notification S3 would send for it."""
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return s3_event(BUCKET, key, len(body))


def result(s3, key: str) -> dict:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_uploaded_digits_get_json_results(s3, handler, digits):
    images, labels = digits
    right = 0
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        key = f"uploads/batch 1/digit {i}.png"  # spaces arrive URL-encoded as '+'
        summary = handler(upload(s3, key, png(image)), None)
        (record,) = summary["results"]
        assert record["result"] == f"results/{key}.json"
        answer = result(s3, f"results/{key}.json")
        assert answer["bucket"] == BUCKET and answer["key"] == key
        assert set(answer) >= {"digit", "confidence", "probabilities", "top3", "model_version"}
        assert answer["top3"][0]["digit"] == answer["digit"]
        right += answer["digit"] == str(label)
    assert right >= 18  # the session model is > 90 % accurate


def test_bad_uploads_get_error_json_without_raising(s3, handler, digits):
    images, _ = digits
    truncated = png(images[0])[:200]
    for key, body in [
        ("uploads/not-an-image.png", b"this is not an image"),
        ("uploads/truncated.png", truncated),
        ("uploads/empty.png", b""),
    ]:
        (record,) = handler(upload(s3, key, body), None)["results"]
        answer = result(s3, f"results/{key}.json")
        assert set(answer) == {"bucket", "key", "error"}, answer
        assert record["error"] == answer["error"]
    assert "not an image" in result(s3, "results/uploads/not-an-image.png.json")["error"]
    # An object deleted before the function reads it is answered too, not retried forever.
    gone = upload(s3, "uploads/gone.png", png(images[0]))
    s3.delete_object(Bucket=BUCKET, Key="uploads/gone.png")
    handler(gone, None)
    assert "deleted" in result(s3, "results/uploads/gone.png.json")["error"]


def test_results_never_trigger_new_results(s3, handler, digits):
    handler(upload(s3, "uploads/once.png", png(digits[0][0])), None)
    s3.put_object(Bucket=BUCKET, Key="uploads/notes.json", Body=b"{}")
    before = _keys(s3)
    for key in ("results/uploads/once.png.json", "uploads/notes.json"):
        (record,) = handler(s3_event(BUCKET, key, 2), None)["results"]
        assert "skipped" in record
    assert _keys(s3) == before


def test_module_handler_loads_the_model_from_s3(s3, trained, digits, monkeypatch):
    for name in ("model.onnx", "model.json"):
        s3.upload_file(str(trained.model_dir / name), BUCKET, f"models/v1/{name}")
    monkeypatch.setenv(aws_lambda.MODEL_ENV, f"s3://{BUCKET}/models/v1")
    monkeypatch.setenv(aws_lambda.RESULTS_ENV, "answers/")
    aws_lambda._default.cache_clear()
    try:
        image, label = digits[0][1], digits[1][1]
        aws_lambda.handler(upload(s3, "uploads/from-s3-model.png", png(image)), None)
        answer = result(s3, "answers/uploads/from-s3-model.png.json")
        assert answer["digit"] == str(label)
        assert answer["model_version"] == f"s3://{BUCKET}/models/v1"

        monkeypatch.setenv(aws_lambda.MODEL_ENV, f"s3://{BUCKET}/models/missing/")
        aws_lambda._default.cache_clear()
        with pytest.raises(ModelError, match="models/missing/model.onnx"):
            aws_lambda.handler(upload(s3, "uploads/x.png", png(image)), None)
    finally:
        aws_lambda._default.cache_clear()


def test_http_events_answer_like_the_service(handler, trained, digits, tmp_path):
    images, _ = digits
    requests = [
        httpx.Request("POST", "/predict", files={"file": ("d.png", png(images[1]))}),
        httpx.Request("POST", "/predict", json={"image": _b64(png(images[2]))}),
        httpx.Request(
            "POST",
            "/predict/batch",
            files=[("files", (f"{i}.png", png(im))) for i, im in enumerate(images[:4])],
        ),
        httpx.Request("POST", "/predict", files={"file": ("bad.png", b"not an image")}),
        httpx.Request("POST", "/predict", content=b"x", headers={"content-type": "text/plain"}),
        httpx.Request("POST", "/predict", json={"image": "%%%"}),
        httpx.Request("GET", "/model"),
        httpx.Request("GET", "/health"),
    ]
    # No store on either side: the answers must be equal, request ids included (both null).
    with (
        running_service(trained.model_dir, tmp_path, "--store", "") as url,
        httpx.Client(base_url=url) as http,
    ):
        for request in requests:
            body = request.read()
            kind = request.headers.get("content-type")
            event = function_url_event(request.method, request.url.path, body, kind)
            from_lambda = handler(event, None)
            expected = http.send(
                http.build_request(
                    request.method,
                    request.url.path,
                    content=body,
                    headers={"content-type": kind} if kind else {},
                )
            )
            assert from_lambda["statusCode"] == expected.status_code, request.url.path
            assert json.loads(from_lambda["body"]) == expected.json()
            assert from_lambda["headers"]["content-type"] == "application/json"


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def _keys(s3) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
