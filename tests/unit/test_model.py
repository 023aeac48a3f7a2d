from pathlib import Path

import numpy as np
import pytest
import torch

from digitops.config import ModelConfig
from digitops.model.artifact import INPUT_NAME, onnx_session
from digitops.model.cnn import DigitCNN, count_parameters
from digitops.model.export import PARITY_TOLERANCE, export_onnx

MAX_PARAMETERS = 25_000


def test_default_model_fits_the_parameter_budget():
    assert count_parameters(DigitCNN(10, ModelConfig().width)) <= MAX_PARAMETERS


def test_output_size_follows_the_number_of_classes():
    net = DigitCNN(24).eval()
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 24)


def test_model_is_fully_convolutional():
    kinds = {type(m).__name__ for m in DigitCNN(10).modules()}
    assert "Linear" not in kinds


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[DigitCNN, Path, float]:
    torch.manual_seed(0)
    net = DigitCNN(10, mean=0.13, std=0.31)
    # Non-trivial batch-norm statistics, so the parity check covers them.
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(32, 1, 28, 28))
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    images = np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    return net, path, export_onnx(net, path, images)


def test_onnx_export_matches_torch(exported):
    _, _, diff = exported
    assert diff < PARITY_TOLERANCE


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_onnx_model_has_a_dynamic_batch_axis(exported, batch: int):
    net, path, _ = exported
    x = np.random.default_rng(batch).random((batch, 1, 28, 28), dtype=np.float32)
    got = onnx_session(path).run(None, {INPUT_NAME: x})[0]
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(x)).numpy()
    assert got.shape == (batch, 10)
    assert np.abs(got - expected).max() < PARITY_TOLERANCE
