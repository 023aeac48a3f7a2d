"""The service's Label Studio ML-backend endpoints, in process: health, setup, and a
pre-annotation per task whatever the image's form; bad requests are 4xx JSON."""

import base64
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from digitops.data.idx import BUNDLED_MNIST, load_idx_dir
from digitops.labeling.tasks import choice_of, labeling_config
from digitops.serving.app import create_app
from digitops.serving.predictor import load_predictor
from digitops.store.writer import StoreWriter

from ..store.test_store import keep


@pytest.fixture(scope="module")
def service(trained, tmp_path_factory):  # type: ignore[no-untyped-def]
    predictor = load_predictor(str(trained.model_dir))
    writer = StoreWriter(str(tmp_path_factory.mktemp("ml") / "store"), "service")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("LABEL_STUDIO_URL", raising=False)  # this service knows no Label Studio
        app = create_app(predictor, writer)
    with TestClient(app) as client:
        yield client, predictor, writer


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(255 - image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_label_studio_validates_the_backend(service):
    client, predictor, _ = service
    health = client.get("/label-studio/health")
    assert health.status_code == 200 and health.json()["status"] == "UP"
    setup = client.post(
        "/label-studio/setup", json={"project": "1.1700000000", "schema": "<View/>"}
    )
    assert setup.json() == {"model_version": f"{predictor.name}/{predictor.version}"}


def test_each_task_gets_the_models_answer_as_pre_annotation(service):
    client, predictor, writer = service
    idx = load_idx_dir(BUNDLED_MNIST)
    stored = keep(writer, idx.test_images[:1])[0]
    drawn = base64.b64encode(png(idx.test_images[1])).decode()
    tasks = [
        {"id": 1, "data": {"image": "/data/local-files/?d=x.png", "request_id": stored}},
        {"id": 2, "data": {"image": f"data:image/png;base64,{drawn}"}},
        {"id": 3, "data": {"image": "/data/upload/1/elsewhere.png"}},
    ]
    body = {"tasks": tasks, "label_config": labeling_config(), "project": "1.1", "params": {}}
    answer = client.post("/label-studio/predict", json=body)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == 3
    version = f"{predictor.name}/{predictor.version}"
    expected = predictor.predict(idx.test_images[:2].astype(np.float32) / 255)
    for n, (result, truth) in enumerate(zip(results[:2], expected, strict=True)):
        assert choice_of(result["result"]) == truth.digit == str(idx.test_labels[n])
        assert result["score"] == pytest.approx(truth.confidence, abs=1e-3)
        assert result["model_version"] == version
        assert result["result"][0]["to_name"] == "image"
    # No result at all: Label Studio keeps no prediction, and asks again later.
    assert "result" not in results[2] and "LABEL_STUDIO_URL" in results[2]["error"]


def test_the_projects_own_tag_names_are_used(service):
    client, _, _ = service
    config = (
        '<View><Image name="photo" value="$img"/><Choices name="number" toName="photo">'
        '<Choice value="7"/></Choices></View>'
    )
    drawn = base64.b64encode(png(load_idx_dir(BUNDLED_MNIST).test_images[0])).decode()
    tasks = [{"id": 1, "data": {"img": f"data:image/png;base64,{drawn}"}}]
    result = client.post("/label-studio/predict", json={"tasks": tasks, "label_config": config})
    region = result.json()["results"][0]["result"][0]
    assert (region["from_name"], region["to_name"]) == ("number", "photo")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"tasks": "x", "label_config": labeling_config()}, "not a Label Studio predict request"),
        ({"tasks": [], "label_config": "<View"}, "not valid XML"),
        ({"tasks": [], "label_config": "<View><Text name='t' value='$t'/></View>"}, "no <Choices>"),
    ],
)
def test_a_bad_predict_request_is_a_4xx_json_error(service, body, message):
    client, _, _ = service
    answer = client.post("/label-studio/predict", json=body)
    assert answer.status_code == 422 and message in answer.json()["error"]
    malformed = {"content": b"{", "headers": {"content-type": "application/json"}}
    assert client.post("/label-studio/predict", **malformed).status_code == 400
    assert client.post("/label-studio/predict", content=b"{}").status_code == 415


class Redirecting(BaseHTTPRequestHandler):
    """A Label Studio whose files redirect elsewhere (where the key must not follow)."""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", "http://127.0.0.1:9/stolen")
        self.end_headers()

    def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
        pass


def test_the_backend_fetches_only_label_studios_files_and_follows_no_redirect(trained):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("LABEL_STUDIO_URL", url)
            env.setenv("LABEL_STUDIO_API_KEY", "legacy-token")
            app = create_app(load_predictor(str(trained.model_dir)))
        images = {
            "//elsewhere.example/data/upload/x.png": "fetches nothing else",
            "http://127.0.0.1:9/data/upload/x.png": "fetches nothing else",
            "/api/projects": "fetches nothing else",
            f"{url}/data/upload/../../api/projects": "fetches nothing else",
            "/data/upload/%2e%2e/%2E%2E/api/projects": "fetches nothing else",
            "/data/upload/a b.png": "control characters",  # urllib refuses it: still a 200
            "/data/local-files/?d=x.png": "302",  # a file path, but the answer redirects
        }
        tasks = [{"id": n, "data": {"image": image}} for n, image in enumerate(images)]
        with TestClient(app) as client:
            body = {"tasks": tasks, "label_config": labeling_config()}
            results = client.post("/label-studio/predict", json=body).json()["results"]
        for result, expected in zip(results, images.values(), strict=True):
            assert "result" not in result and expected in result["error"], result
    finally:
        server.shutdown()
