"""ONNX export with a dynamic batch axis, checked against torch at export time."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from digitops.errors import ModelError
from digitops.model.artifact import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME, as_input, onnx_session

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
_PARITY_BATCH = 16


class _WithEmbedding(torch.nn.Module):
    """The network with its embedding as a second output (what the ONNX model exposes)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_with_embedding(x)  # type: ignore[operator]


def export_onnx(net: torch.nn.Module, path: Path, check_images: np.ndarray) -> float:
    """Export `net` to `path` (outputs: logits, then the embedding) and return the max
    |onnx - torch| of the logits on `check_images` (N×28×28 uint8).

    Raises `ModelError` when the exported model disagrees with torch beyond the tolerance.
    """
    net = net.eval()
    height, width = check_images.shape[1:]
    example = torch.zeros(2, 1, height, width)
    batch = torch.export.Dim("batch", min=1)
    # Without torchvision the exporter warns about its ops once per export; they are not used.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    torch.onnx.export(
        _WithEmbedding(net).eval(),
        (example,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME, EMBEDDING_NAME],
        dynamic_shapes=({0: batch},),
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    diff = onnx_parity(net, path, check_images[:_PARITY_BATCH])
    if diff >= PARITY_TOLERANCE:
        raise ModelError(
            f"{path}: ONNX output differs from torch by {diff:.2e} "
            f"(tolerance {PARITY_TOLERANCE:.0e})"
        )
    log.info("exported ONNX model (max |onnx - torch| = %.2e)", diff)
    return diff


def onnx_parity(net: torch.nn.Module, path: Path, images: np.ndarray) -> float:
    """Max absolute difference between torch and onnxruntime logits on uint8 images."""
    x = as_input(images)
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(x)).numpy()
    got = onnx_session(path).run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    return float(np.abs(got - expected).max())
