"""The prediction service as users call it: uvicorn on 127.0.0.1, real HTTP, bad input."""

import base64
import io
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from digitops.data.current import load_current
from digitops.data.dataset import load_dataset
from digitops.model.calibration import DEFAULT_CONFIDENCE_FLOOR
from digitops.store.layout import decode_embedding

from ..integration.test_cli import run_cli
from ..serving_helpers import png, running_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, trained):
    work = tmp_path_factory.mktemp("service")
    store = work / "store"
    extra = ("--workers", "2", "--store", str(store))
    with running_service(trained.model_dir, work, *extra) as url:
        yield url, store


@pytest.fixture(scope="module")
def digits(mnist_slice: Path):
    test = load_dataset(mnist_slice).split("test")
    return test.images[:200], test.labels[:200]


def test_predicts_uploaded_digits(service, digits):
    url, _ = service
    images, labels = digits
    right = 0
    with httpx.Client(base_url=url) as client:
        for image, label in zip(images, labels, strict=True):
            response = client.post("/predict", files={"file": ("digit.png", png(image))})
            assert response.status_code == 200
            right += response.json()["digit"] == str(label)
    assert right / len(labels) > 0.9


def test_answer_shape_json_and_batch(service, digits):
    url, _ = service
    images, _ = digits
    encoded = base64.b64encode(png(images[0])).decode()
    with httpx.Client(base_url=url) as client:
        single = client.post("/predict", json={"image": encoded}).json()
        batch = client.post("/predict/batch", json={"images": [encoded] * 3}).json()
        files = [("files", (f"{i}.png", png(img))) for i, img in enumerate(images[:5])]
        multipart = client.post("/predict/batch", files=files).json()
    assert set(single) == {
        "digit",
        "confidence",
        "probabilities",
        "top3",
        "unsure",
        "model_version",
        "request_id",
    }
    assert abs(sum(single["probabilities"].values()) - 1) < 1e-4
    assert single["top3"][0]["digit"] == single["digit"]
    assert [p["digit"] for p in batch["predictions"]] == [single["digit"]] * 3
    assert len(multipart["predictions"]) == 5


def _unsure_total(client: httpx.Client) -> float:
    found = re.search(
        r"^digitops_unsure_predictions_total (\S+)$", client.get("/metrics").text, re.M
    )
    return float(found.group(1)) if found else 0.0


def test_unsure_answers_are_flagged_and_counted_in_metrics(service, digits):
    """Below the confidence floor an answer says `unsure`; noise is no digit the model knows."""
    url, _ = service
    rng = np.random.default_rng(0)
    noise = [(rng.random((28, 28)) * 255).astype(np.uint8) for _ in range(10)]
    with httpx.Client(base_url=url) as client:
        before = _unsure_total(client)
        answers = [
            client.post("/predict", files={"file": ("d.png", png(image))}).json()
            for image in [*digits[0][:50], *noise]
        ]
        after = _unsure_total(client)
    assert all(a["unsure"] == (a["confidence"] < DEFAULT_CONFIDENCE_FLOOR) for a in answers)
    assert sum(a["unsure"] for a in answers[50:]) >= 5  # most noise images
    assert sum(a["unsure"] for a in answers[:50]) <= 5  # few test digits
    assert after - before == sum(a["unsure"] for a in answers)


def _bad_requests(digit: bytes) -> dict[str, dict]:
    return {
        "non-image bytes": {"files": {"file": ("a.png", b"just some text")}},
        "empty file": {"files": {"file": ("a.png", b"")}},
        "truncated file": {"files": {"file": ("a.png", digit[:80])}},
        "bad base64": {"json": {"image": "***not base64***"}},
        "JSON without image": {"json": {"picture": "x"}},
        "wrong content type": {"content": b"x", "headers": {"content-type": "text/plain"}},
        "no content type": {"content": b"x"},
        "multipart without file": {"data": {"file": "a string"}},
        "body over the limit": {"files": {"file": ("big.png", b"0" * (11 * 2**20))}},
    }


def test_bad_input_is_a_4xx_json_error_and_the_service_survives(service, digits):
    url, _ = service
    digit = png(digits[0][0])
    with httpx.Client(base_url=url, timeout=60) as client:
        for name, request in _bad_requests(digit).items():
            response = client.post("/predict", **request)
            assert 400 <= response.status_code < 500, (name, response.status_code)
            assert response.json()["error"], name
        assert client.get("/health").json() == {"status": "ok"}
        assert client.post("/predict", files={"file": ("d.png", digit)}).status_code == 200


def test_100_megapixel_image_is_413(service):

    url, _ = service
    buffer = io.BytesIO()
    Image.new("L", (10_000, 10_000), 255).save(buffer, "PNG")
    response = httpx.post(f"{url}/predict", files={"file": ("big.png", buffer.getvalue())})
    assert response.status_code == 413 and "megapixels" in response.json()["error"]


def test_model_ready_and_prometheus_metrics(service, trained):
    url, _ = service
    model = httpx.get(f"{url}/model").json()
    assert model["source"] == str(trained.model_dir) and len(model["classes"]) == 10
    assert httpx.get(f"{url}/ready").json()["status"] == "ready"
    metrics = httpx.get(f"{url}/metrics").text
    assert "digitops_predictions_total" in metrics
    assert "/predict" in httpx.get(f"{url}/openapi.json").json()["paths"]


def test_the_store_keeps_every_concurrent_prediction_and_feeds_drift(service, digits):
    url, store = service
    digit = png(digits[0][0])
    blobs_before = sum(p.stat().st_size for p in store.rglob("blobs/*/*.pack"))

    def post(_: int) -> dict:
        response = httpx.post(f"{url}/predict", files={"file": ("d.png", digit)})
        assert response.status_code == 200
        return response.json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, range(200)))
    lines = [line for f in store.rglob("records/*/*.jsonl") for line in f.read_text().splitlines()]
    records = {r["request_id"]: r for r in map(json.loads, lines)}  # every line whole
    assert {a["request_id"] for a in answers} <= set(records)
    record = records[answers[0]["request_id"]]
    assert {"predicted", "confidence", "model_version", "image_at", "embedding"} <= set(record)
    assert len(decode_embedding(record["embedding"])) == 32
    blobs = sum(p.stat().st_size for p in store.rglob("blobs/*/*.pack"))
    assert blobs - blobs_before < 2 * (len(digit) + 1000)  # one image, kept once per worker
    current = load_current(store)  # drift reads the store: descriptors from the kept images
    assert len(current) == len(lines) and current.table["ink_fraction"].notna().all()


def test_predict_command_locally_and_against_the_service(service, digits, trained, tmp_path):
    url, _ = service
    image = tmp_path / "digit.png"
    image.write_bytes(png(digits[0][0]))
    label = str(digits[1][0])
    local = run_cli("predict", str(image), "--model", str(trained.model_dir), cwd=tmp_path)
    remote = run_cli("predict", str(image), "--url", url, cwd=tmp_path)
    assert local.returncode == 0 and remote.returncode == 0, local.stderr + remote.stderr
    assert local.stdout.split(":")[1].split()[0] == label
    assert remote.stdout.split(":")[1].split()[0] == label
    (tmp_path / "note.png").write_text("not an image")
    refused = run_cli("predict", str(tmp_path / "note.png"), "--url", url, cwd=tmp_path)
    assert refused.returncode == 2 and "not an image" in refused.stderr


def test_schemathesis_finds_no_server_error(service, tmp_path: Path):
    url, _ = service
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")),
            *("run", f"{url}/openapi.json", "--checks", "not_a_server_error"),
            *("--max-examples", "40", "--seed", "7", "--generation-deterministic"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # schemathesis keeps its state in ./.schemathesis
    )
    assert result.returncode == 0, result.stdout[-4000:]


def test_feedback_keeps_a_label_and_refuses_bad_ones_without_changing_the_store(service, digits):
    url, store = service
    images, labels = digits
    with httpx.Client(base_url=url) as client:
        answer = client.post("/predict", files={"file": ("d.png", png(images[3]))}).json()
        rid, digit = answer["request_id"], str(labels[3])
        kept = client.post("/feedback", json={"request_id": rid, "digit": int(digit)})
        assert kept.status_code == 201, kept.text
        assert kept.json()["label"] == digit and kept.json()["predicted"] == answer["digit"]
        before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
        refusals = [
            ({"request_id": rid, "digit": digit}, 409, "already labeled"),
            ({"request_id": "20261202T000000-00000000-0", "digit": "1"}, 404, "no prediction"),
            ({"request_id": "not-an-id", "digit": "1"}, 404, "not a request id"),
            ({"request_id": rid, "digit": 10, "replace": True}, 422, "not a class"),
            ({"request_id": rid, "digit": "seven", "replace": True}, 422, "not a class"),
            ({"digit": "1"}, 422, "request_id"),
            ({"request_id": rid, "digit": "1", "colour": "red"}, 422, "colour"),
            ({"request_id": rid, "digit": "1", "source": "a b"}, 422, "source"),
        ]
        for body, status, message in refusals:
            response = client.post("/feedback", json=body)
            assert response.status_code == status, (body, response.text)
            assert message in response.json()["error"], response.json()
        malformed = client.post(
            "/feedback", content=b'{"request_id": ', headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 400 and "not valid JSON" in malformed.json()["error"]
        assert client.post("/feedback", content=b"7").status_code == 415
        half_bad = {"labels": [{"request_id": rid, "digit": "1", "replace": True}, {"x": 1}]}
        assert client.post("/feedback/batch", json=half_bad).status_code == 422
        assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before
        metrics = client.get("/metrics").text
    assert re.search(
        r'^digitops_live_labeled_requests\{model_version="local"\} [1-9]', metrics, re.M
    )
