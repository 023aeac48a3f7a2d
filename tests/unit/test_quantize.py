"""The int8 model: a QDQ quantization of the exported DigitCNN that keeps its input and both
outputs, fits issue 21's size budget and answers like the fp32 model."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from digitops.data.idx import BUNDLED_MNIST, load_idx_dir
from digitops.errors import ModelError
from digitops.model.artifact import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME, as_input, onnx_session
from digitops.model.cnn import DigitCNN
from digitops.model.export import export_onnx
from digitops.model.quantize import Int8Model, quantize_onnx

MAX_INT8_BYTES = 30_000  # the budget for the default width-8 model (about 20k parameters)
CONVOLUTIONS = 7


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits: 1,000 to calibrate on, 1,000 others to compare answers on."""
    mnist = load_idx_dir(BUNDLED_MNIST)
    return mnist.train_images[-1000:], mnist.test_images[:1000]


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory, digits) -> Path:
    """An untrained but deterministic width-8 DigitCNN, exported; its batch-norm statistics come
    from real digits, so the weights folded at export vary per channel as a trained model's do."""
    calibration, _ = digits
    torch.manual_seed(0)
    net = DigitCNN(10, width=8, mean=0.13, std=0.31).train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.from_numpy(as_input(calibration[:256])))
    path = tmp_path_factory.mktemp("int8") / "model.onnx"
    export_onnx(net, path, calibration[:16])
    return path


@pytest.fixture(scope="module")
def int8(fp32: Path, digits) -> Int8Model:
    return quantize_onnx(fp32, fp32.with_name("model.int8.onnx"), digits[0])


def test_int8_model_fits_the_size_budget(fp32, int8):
    assert int8.path.stat().st_size == int8.size_bytes <= MAX_INT8_BYTES
    assert int8.size_bytes < fp32.stat().st_size / 3
    assert int8.calibration_images == 1000


def test_every_convolution_runs_on_int8_weights_per_channel(int8):
    model = onnx.load(int8.path)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in model.graph.node}
    kernels = [t for t in model.graph.initializer if len(t.dims) == 4]
    assert len(kernels) == CONVOLUTIONS
    assert all(t.data_type == onnx.TensorProto.INT8 for t in kernels)
    scales = {
        node.input[0]: node.input[1]
        for node in model.graph.node
        if node.op_type == "DequantizeLinear"
    }
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    assert all(sizes[scales[t.name]] == t.dims[0] for t in kernels)  # one scale per channel


def test_int8_model_keeps_the_input_and_both_outputs(int8, digits):
    session = onnx_session(int8.path)
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert [o.name for o in session.get_outputs()] == [OUTPUT_NAME, EMBEDDING_NAME]
    logits, embedding = session.run(None, {INPUT_NAME: as_input(digits[1][:7])})
    assert logits.shape == (7, 10)
    assert embedding.shape == (7, 32)


def test_int8_model_answers_like_the_fp32_one(fp32, int8, digits):
    x = as_input(digits[1])
    logits, embedding = onnx_session(fp32).run(None, {INPUT_NAME: x})
    logits8, embedding8 = onnx_session(int8.path).run(None, {INPUT_NAME: x})
    assert not np.array_equal(logits, logits8)  # really another model
    assert (logits.argmax(axis=1) == logits8.argmax(axis=1)).mean() >= 0.98
    cosine = (embedding * embedding8).sum(axis=1) / (
        np.linalg.norm(embedding, axis=1) * np.linalg.norm(embedding8, axis=1)
    )
    assert cosine.min() > 0.99


def test_calibration_takes_at_most_the_asked_number_of_images(fp32, digits, tmp_path):
    written = quantize_onnx(fp32, tmp_path / "few.onnx", digits[0], max_images=50)
    assert written.calibration_images == 50
    assert written.path.is_file()


def test_no_images_or_a_broken_model_is_one_model_error_and_no_file(fp32, digits, tmp_path):
    with pytest.raises(ModelError, match=r"int8 calibration needs N×28×28 images, got shape \(0,"):
        quantize_onnx(fp32, tmp_path / "a.onnx", digits[0][:0])
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an ONNX model")
    with pytest.raises(ModelError, match=f"{broken}: not a loadable ONNX model"):
        quantize_onnx(broken, tmp_path / "b.onnx", digits[0])
    assert not (tmp_path / "a.onnx").exists()
    assert not (tmp_path / "b.onnx").exists()
