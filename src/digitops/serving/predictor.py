"""The model behind the service: an ONNX session plus the model card, loaded from anywhere.

Sources: a local model directory (`model.onnx` + `model.json`, from `digitops train`), a
registry URI (`models:/digit-classifier@production`, `models:/digit-classifier/3`) or a run
(`runs:/<run id>/onnx-model`). MLflow is imported only to resolve such URIs; onnxruntime runs
the model. No torch here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitops.errors import ModelError
from digitops.model.artifact import (
    MODEL_ONNX,
    ModelCard,
    find_card,
    onnx_session,
    serving_threads,
    softmax,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """One image's answer."""

    digit: str
    confidence: float
    probabilities: dict[str, float]
    top3: list[dict[str, Any]]


@dataclass
class Predictor:
    """Runs the ONNX model on batches of 28×28 float images in [0, 1]."""

    session: Any
    class_names: list[str]
    source: str
    version: str
    name: str
    metrics: dict[str, Any] = field(default_factory=dict)

    def predict(self, images: np.ndarray) -> list[Prediction]:
        """Predictions for an N×28×28 float32 batch."""
        inputs = {self.session.get_inputs()[0].name: images[:, None].astype(np.float32)}
        probabilities = softmax(self.session.run(None, inputs)[0])
        return [self._answer(row) for row in probabilities]

    def _answer(self, row: np.ndarray) -> Prediction:
        order = np.argsort(row)[::-1]
        names = self.class_names
        return Prediction(
            digit=names[order[0]],
            confidence=float(row[order[0]]),
            probabilities={name: float(p) for name, p in zip(names, row, strict=True)},
            top3=[{"digit": names[i], "probability": float(row[i])} for i in order[:3]],
        )


def load_predictor(source: str, threads: int | None = None) -> Predictor:
    """Load the model named by `source` (a directory, `models:/...` or `runs:/...`)."""
    name, version = "local", "local"
    if source.startswith(("models:/", "runs:/")):
        directory, name, version = _download(source)
    else:
        directory = Path(source)
    onnx_path = directory / MODEL_ONNX
    card_path = find_card(directory)
    if not onnx_path.is_file() or card_path is None:
        raise ModelError(f"{source}: no model.onnx and model.json; train or register a model")
    card = ModelCard.model_validate_json(card_path.read_text())
    return Predictor(
        session=onnx_session(onnx_path, threads or serving_threads()),
        class_names=card.class_names,
        source=source,
        version=version,
        name=name,
        metrics=card.metrics.model_dump(),
    )


def _download(uri: str) -> tuple[Path, str, str]:
    """Fetch a registered model or run artifact; returns (directory, model name, version)."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    name, version = "run", uri
    try:
        if uri.startswith("models:/"):
            name, version = _resolve_version(MlflowClient(), uri.removeprefix("models:/"))
        directory = Path(download_artifacts(artifact_uri=uri))
    except MlflowException as exc:
        raise ModelError(f"{uri}: cannot load from MLflow: {exc.message}") from None
    return directory, name, version


def _resolve_version(client: Any, ref: str) -> tuple[str, str]:
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, str(client.get_model_version_by_alias(name, alias).version)
    name, _, version = ref.partition("/")
    return name, version
