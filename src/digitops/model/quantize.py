"""The int8 model: ONNX Runtime static quantization (QDQ) of the exported fp32 model, calibrated
on validation images. `train` writes it beside `model.onnx`; serving may run it instead.

The choices, for this small convolutional network on CPUs:
- QDQ, static: every convolution gets int8 weights and activations whose ranges were measured
  (MinMax) on up to 1,000 validation images; onnxruntime fuses each QuantizeLinear → Conv →
  DequantizeLinear group into one QLinearConv when the session loads. (Dynamic quantization
  would measure every activation's range again on each request.)
- per-channel weights: the exporter folds batch norm into the convolutions, which scales each
  output channel differently; one scale per channel keeps the small channels from rounding away.
- uint8 activations, int8 weights with 7-bit range (`reduce_range`): onnxruntime's advice for
  x86, where kernels without VNNI add products in int16 and could saturate; with it the model
  answers alike on every x86 CPU (Lambda's included), so its measured accuracy holds there.
- no `quant_pre_process`: it only adds shape annotations here (batch norm is already folded), so
  its advice is silenced.
- the written file is compacted: the exporter's debugging records (stack traces, node origins)
  are dropped and internal tensors get short names. The int8 weights of a width-8 model are
  ~20 KB; with those records and names the file would be ~55 KB, not ~27 KB. Only the input and
  outputs (`image` → `logits`, `embedding`) are the model's contract, and they keep their names.
No torch here.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitops.errors import ModelError
from digitops.fileio import atomic_write_bytes
from digitops.model.artifact import INPUT_NAME, as_input

CALIBRATION_IMAGES = 1000
_CALIBRATION_BATCH = 100


@dataclass(frozen=True)
class Int8Model:
    """What `quantize_onnx` wrote."""

    path: Path
    size_bytes: int
    calibration_images: int


def quantize_onnx(
    fp32_path: Path, out_path: Path, images: np.ndarray, max_images: int = CALIBRATION_IMAGES
) -> Int8Model:
    """Write the int8 (QDQ) model of `fp32_path` to `out_path`, its activation ranges calibrated
    on `images` (N×28×28 uint8; at most `max_images` of them, evenly spaced).

    Raises `ModelError` when there are no images or the model cannot be quantized.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if images.ndim != 3 or len(images) == 0:
        raise ModelError(
            f"{fp32_path}: int8 calibration needs N×28×28 images, got shape {images.shape}"
        )
    try:
        model = onnx.load(str(fp32_path))
    except Exception as exc:  # onnx raises protobuf's and its own errors for a bad file
        raise ModelError(f"{fp32_path}: not a loadable ONNX model ({exc})") from None
    _drop_debug_records(model)
    sample = _spread(images, max_images)
    with tempfile.TemporaryDirectory(prefix="digitops-int8-") as tmp, _quiet_preprocess_advice():
        quantized_path = Path(tmp) / "model.int8.onnx"
        try:
            quantize_static(
                model,
                str(quantized_path),
                _Calibration(sample),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
            quantized = onnx.load(str(quantized_path))
            _drop_debug_records(quantized)
            _short_names(quantized)
            onnx.checker.check_model(quantized)
        except Exception as exc:  # onnxruntime's quantizer raises untyped errors
            raise ModelError(f"{fp32_path}: int8 quantization failed ({exc})") from None
    data = quantized.SerializeToString()
    atomic_write_bytes(out_path, data)
    return Int8Model(out_path, len(data), len(sample))


class _Calibration:
    """onnxruntime's calibration data reader over uint8 images, a batch at a time."""

    def __init__(self, images: np.ndarray) -> None:
        self._batches = (
            {INPUT_NAME: as_input(images[i : i + _CALIBRATION_BATCH])}
            for i in range(0, len(images), _CALIBRATION_BATCH)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _spread(images: np.ndarray, count: int) -> np.ndarray:
    """At most `count` images, evenly spaced: a split that mixes sources (production requests,
    then MNIST) has each of them in the sample."""
    if len(images) <= count:
        return images
    return images[np.linspace(0, len(images) - 1, count).astype(int)]


def _drop_debug_records(model: Any) -> None:
    """Remove what only debugging reads: per-node origins and stack traces, the exporter's graph
    signature, inferred shapes (onnxruntime infers them again)."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.metadata_props[:]
    del model.graph.value_info[:]


def _short_names(model: Any) -> None:
    """Name every internal tensor and node t0, t1, … and n0, n1, … (graph inputs and outputs
    keep theirs)."""
    graph = model.graph
    kept = {value.name for value in [*graph.input, *graph.output]}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in kept:
            return name
        return names.setdefault(name, f"t{len(names)}")

    for i, node in enumerate(graph.node):
        node.input[:] = [short(name) for name in node.input]
        node.output[:] = [short(name) for name in node.output]
        node.name = f"n{i}"
    for tensor in graph.initializer:
        tensor.name = short(tensor.name)


class _PreprocessAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider")


@contextmanager
def _quiet_preprocess_advice() -> Iterator[None]:
    """onnxruntime logs its `quant_pre_process` advice twice on the root logger, every time."""
    advice = _PreprocessAdvice()
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)
