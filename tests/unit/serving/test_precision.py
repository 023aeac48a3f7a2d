"""The precision a model answers at: fp32 unless told otherwise (`load_predictor`'s argument,
$DIGITOPS_PRECISION, `serve --precision`), the int8 file beside the fp32 one when told so, and
one clear error for a model without an int8 file or a precision that does not exist."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from digitops.cli import app
from digitops.data.idx import BUNDLED_MNIST, load_idx_dir
from digitops.errors import ModelError
from digitops.model.artifact import MODEL_CARD, MODEL_INT8, MODEL_ONNX, OnnxClassifier
from digitops.model.quantize import quantize_onnx
from digitops.serving import aws_lambda
from digitops.serving.predictor import PRECISION_ENV, load_predictor

from .test_batch import centroid_model


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_idx_dir(BUNDLED_MNIST).test_images[:500]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, digits) -> Path:
    """A model directory with both files (the int8 one calibrated on other digits)."""
    directory = centroid_model(tmp_path_factory.mktemp("precision") / "model")
    calibration = load_idx_dir(BUNDLED_MNIST).train_images[-500:]
    quantize_onnx(directory / MODEL_ONNX, directory / MODEL_INT8, calibration)
    return directory


@pytest.fixture
def older(tmp_path: Path) -> Path:
    """A model directory from before int8 models: no int8 file."""
    return centroid_model(tmp_path / "older")


@pytest.fixture(autouse=True)
def no_precision_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PRECISION_ENV, raising=False)  # and unset again after each test


def test_a_predictor_answers_at_fp32_unless_told_otherwise(model, digits, monkeypatch):
    fp32 = load_predictor(str(model))
    assert fp32.precision == "fp32"
    monkeypatch.setenv(PRECISION_ENV, "int8")
    int8 = load_predictor(str(model))
    assert int8.precision == "int8"
    assert load_predictor(str(model), precision="fp32").precision == "fp32"  # the argument wins
    logits, logits8 = fp32.classifier.logits(digits), int8.classifier.logits(digits)
    assert not np.array_equal(logits, logits8)  # the int8 file answers
    assert (logits.argmax(axis=1) == logits8.argmax(axis=1)).mean() >= 0.95


def test_the_int8_file_is_found_in_an_mlflow_download_too(model, tmp_path):
    download = tmp_path / "download"  # MLflow's layout of a logged model: extra files aside
    (download / "extra_files").mkdir(parents=True)
    shutil.copy(model / MODEL_ONNX, download / MODEL_ONNX)
    for name in (MODEL_CARD, MODEL_INT8):
        shutil.copy(model / name, download / "extra_files" / name)
    assert OnnxClassifier.load(download, precision="int8").precision == "int8"


def test_a_model_without_an_int8_file_is_one_clear_error_at_int8(older):
    assert load_predictor(str(older)).precision == "fp32"
    with pytest.raises(ModelError, match=f"^{older}: no int8 model \\(model.int8.onnx\\);"):
        load_predictor(str(older), precision="int8")


def test_a_precision_that_does_not_exist_is_one_clear_error(model, monkeypatch):
    with pytest.raises(ModelError, match="^precision 'fp16': not one of fp32, int8$"):
        OnnxClassifier.load(model, precision="fp16")  # type: ignore[arg-type]
    monkeypatch.setenv(PRECISION_ENV, "INT8")
    with pytest.raises(ModelError, match="^DIGITOPS_PRECISION='INT8': not a precision; use fp32"):
        load_predictor(str(model))


@pytest.mark.parametrize(
    ("precision", "model_fixture", "message"),
    [
        ("fp16", "model", "precision 'fp16': not one of fp32, int8"),
        ("int8", "older", "no int8 model (model.int8.onnx)"),
    ],
)
def test_serve_refuses_a_bad_precision_with_one_line_and_exit_2(
    precision, model_fixture, message, request
):
    directory = request.getfixturevalue(model_fixture)
    argv = ["serve", "--model", str(directory), "--store", "", "--precision", precision]
    done = CliRunner().invoke(app, argv)
    assert done.exit_code == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: ") and message in line


def test_lambda_answers_at_the_precision_its_environment_names(model, monkeypatch):
    monkeypatch.setenv(aws_lambda.MODEL_ENV, str(model))
    monkeypatch.delenv(aws_lambda.STORE_ENV, raising=False)
    monkeypatch.setenv(PRECISION_ENV, "int8")
    aws_lambda._default.cache_clear()
    try:
        assert aws_lambda._default().predictor.precision == "int8"
    finally:
        aws_lambda._default.cache_clear()


def test_the_service_says_which_precision_answers(model, digits):
    from fastapi.testclient import TestClient

    from digitops.serving.app import create_app

    with TestClient(create_app(load_predictor(str(model), precision="int8"))) as http:
        assert http.get("/model").json()["precision"] == "int8"
