"""The model directory's contract: the model card, its class names, and the one ONNX classifier.

`train` writes the directory; evaluate, drift, register, the export check and serving read it
through this module. No torch here, so the serving path can use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from digitops.errors import ModelError
from digitops.fileio import read_json, write_json
from digitops.model.calibration import scaled_softmax

MODEL_ONNX = "model.onnx"
MODEL_INT8 = "model.int8.onnx"  # the int8 (QDQ) model beside it (models since issue 21)
MODEL_CARD = "model.json"
CHECKPOINT = "model.ckpt"
# Where a card may sit in a directory: ours, or MLflow's layout of a logged model's extra files.
CARD_PLACES = (MODEL_CARD, f"extra_files/{MODEL_CARD}")
INT8_PLACES = (MODEL_INT8, f"extra_files/{MODEL_INT8}")
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
EMBEDDING_NAME = "embedding"  # the second output: the penultimate layer (models since issue 17)
INPUT_SPEC = "Nx1x28x28 float32, pixels scaled to [0, 1], light ink on dark background"
THREADS_ENV = "DIGITOPS_ORT_THREADS"
Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)


class CardDataset(BaseModel):
    """The dataset version a model was trained on."""

    version: str
    path: str
    sizes: dict[str, int]
    # With production data (`prepare --source <request store>`): the store, how many labeled
    # requests, and the sha256 of the dataset's records.json that names each of them.
    production: dict[str, Any] | None = None


class CardMetrics(BaseModel):
    """The training numbers a model carries with it."""

    val_accuracy: float
    epochs: int
    train_seconds: float


class CardCalibration(BaseModel):
    """Temperature scaling fitted on the validation split (`digitops.model.calibration`)."""

    temperature: float
    fitted_on: str
    images: int
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float


class CardInt8(BaseModel):
    """The int8 model beside the fp32 one (`digitops.model.quantize`)."""

    file: str = MODEL_INT8
    size_bytes: int
    calibrated_on: str
    images: int
    # Share of the validation split where the int8 and fp32 models answer the same digit.
    agreement: float


class ModelCard(BaseModel):
    """`model.json`: what the model is, what it expects, what it was trained on, how it did."""

    # Cards written by later versions may carry more; reading them must not fail.
    model_config = ConfigDict(extra="ignore", frozen=True)

    architecture: str
    parameters: int
    input: dict[str, str]
    output: dict[str, Any]
    class_names: list[str]
    normalization: dict[str, Any]
    hyperparameters: dict[str, dict[str, Any]]
    augmentation: dict[str, Any]
    dataset: CardDataset
    metrics: CardMetrics
    onnx: dict[str, float]
    mlflow_run_id: str | None
    digitops_version: str
    # Cards written before calibration have none: their temperature is 1 (the raw softmax).
    calibration: CardCalibration | None = None
    # Cards written before int8 models have none, and their directory has no int8 file.
    int8: CardInt8 | None = None

    @property
    def temperature(self) -> float:
        return self.calibration.temperature if self.calibration else 1.0

    def write(self, model_dir: Path) -> None:
        write_json(model_dir / MODEL_CARD, self.model_dump())


def find_card(directory: Path) -> Path | None:
    """The card file of a model directory (ours or an MLflow download), if there is one."""
    return next((directory / p for p in CARD_PLACES if (directory / p).is_file()), None)


def load_card(model_dir: Path) -> ModelCard:
    """The card of a complete model directory (`model.onnx` + `model.json`)."""
    card_path = find_card(model_dir)
    if card_path is None or not (model_dir / MODEL_ONNX).is_file():
        missing = MODEL_CARD if card_path is None else MODEL_ONNX
        raise ModelError(
            f"{model_dir}: not a model directory (no {missing}); train or register a model first"
        )
    try:
        return ModelCard.model_validate(read_json(card_path))
    except (ValueError, ValidationError):
        raise ModelError(f"{card_path}: not a model card from `digitops train`") from None


def check_classes(model_dir: Path, card: ModelCard, class_names: list[str]) -> None:
    """The model must know exactly the data's classes, in the same order."""
    if card.class_names != class_names:
        raise ModelError(
            f"{model_dir}: the model knows classes {card.class_names}, the data has "
            f"{class_names}; use data with matching classes"
        )


def check_precision(value: str) -> Precision:
    """`value` as a precision, or `ModelError` naming the ones there are."""
    if value not in PRECISIONS:
        raise ModelError(f"precision {value!r}: not one of {', '.join(PRECISIONS)}")
    return value


def model_file(model_dir: Path, precision: Precision = "fp32") -> Path:
    """The ONNX file of a model directory (ours or an MLflow download) at `precision`."""
    if check_precision(precision) == "fp32":
        return model_dir / MODEL_ONNX
    found = next((model_dir / p for p in INT8_PLACES if (model_dir / p).is_file()), None)
    if found is None:
        raise ModelError(
            f"{model_dir}: no int8 model ({MODEL_INT8}); it comes from a model trained before "
            "int8 models were written: retrain it, or serve it at fp32"
        )
    return found


def onnx_session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session for `path` (threads: None = onnxruntime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise ModelError(f"{path}: not a loadable ONNX model ({exc})") from None


def serving_threads() -> int:
    """Threads per session in a server: one request is one small image, so more threads would
    only contend with the server's other workers ($DIGITOPS_ORT_THREADS overrides)."""
    return int(os.environ.get(THREADS_ENV, "1"))


def as_input(images: np.ndarray) -> np.ndarray:
    """N×28×28 images (uint8 0..255, or float in [0, 1]) as the model's N×1×28×28 float32."""
    x = images.astype(np.float32)
    if images.dtype == np.uint8:
        x /= 255.0
    return x[:, None]


@dataclass(frozen=True)
class OnnxClassifier:
    """The exported model as every consumer runs it: logits and probabilities per image."""

    session: Any
    card: ModelCard
    precision: Precision = "fp32"

    @classmethod
    def load(
        cls, model_dir: Path, threads: int | None = None, precision: Precision = "fp32"
    ) -> OnnxClassifier:
        """The classifier of a model directory (ours, or an MLflow download of one), running its
        fp32 model or the int8 one beside it."""
        card = load_card(model_dir)
        return cls(onnx_session(model_file(model_dir, precision), threads), card, precision)

    @property
    def class_names(self) -> list[str]:
        return self.card.class_names

    @property
    def has_embedding(self) -> bool:
        return any(o.name == EMBEDDING_NAME for o in self.session.get_outputs())

    def logits(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Logits for N×28×28 images (uint8, or float in [0, 1]), `batch_size` at a time."""
        return self.outputs(images, batch_size)[0]

    def outputs(
        self, images: np.ndarray, batch_size: int = 1000
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits and embeddings (None for a model exported without them)."""
        name = self.session.get_inputs()[0].name
        runs = [
            self.session.run(None, {name: as_input(images[i : i + batch_size])})
            for i in range(0, len(images), batch_size)
        ]
        if not runs:
            return np.zeros((0, len(self.class_names)), np.float32), None
        logits = np.concatenate([run[0] for run in runs])
        embeddings = np.concatenate([run[1] for run in runs]) if len(runs[0]) > 1 else None
        return logits, embeddings

    def calibrated(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities of this model's logits, at the temperature in its card."""
        return scaled_softmax(logits, self.card.temperature)

    def probabilities(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Calibrated probabilities for N×28×28 images."""
        return self.calibrated(self.logits(images, batch_size))
