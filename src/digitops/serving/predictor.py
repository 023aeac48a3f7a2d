"""The model behind the service: an ONNX session plus the model card, loaded from anywhere.

Sources: a local model directory (`model.onnx` + `model.json`, from `digitops train`), a
registry URI (`models:/digit-classifier@production`, `models:/digit-classifier/3`) or a run
(`runs:/<run id>/onnx-model`). MLflow is imported only to resolve such URIs; onnxruntime runs
the model, at fp32 or as the int8 model beside it ($DIGITOPS_PRECISION). No torch here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitops.errors import ModelError
from digitops.model.artifact import PRECISIONS, OnnxClassifier, Precision, serving_threads
from digitops.model.calibration import DEFAULT_CONFIDENCE_FLOOR

CONFIDENCE_FLOOR_ENV = "DIGITOPS_CONFIDENCE_FLOOR"
PRECISION_ENV = "DIGITOPS_PRECISION"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """One image's answer."""

    digit: str
    confidence: float
    probabilities: dict[str, float]
    top3: list[dict[str, Any]]
    unsure: bool  # the calibrated confidence is below the service's floor: `digit` is a guess


@dataclass
class Predictor:
    """The model's classifier (`digitops.model.artifact`) and where it came from."""

    classifier: OnnxClassifier
    source: str
    version: str
    name: str
    metrics: dict[str, Any] = field(default_factory=dict)
    confidence_floor: float = DEFAULT_CONFIDENCE_FLOOR

    @property
    def class_names(self) -> list[str]:
        return self.classifier.class_names

    @property
    def precision(self) -> Precision:
        """Which of the model's files answers: fp32 (`model.onnx`) or int8."""
        return self.classifier.precision

    def predict(self, images: np.ndarray) -> list[Prediction]:
        """Predictions for an N×28×28 float32 batch in [0, 1]."""
        return self.predict_with_embeddings(images)[0]

    def predict_with_embeddings(
        self, images: np.ndarray
    ) -> tuple[list[Prediction], np.ndarray | None]:
        """Predictions and the model's embeddings (None from a model exported without them)."""
        logits, embeddings = self.classifier.outputs(images)
        return [self._answer(row) for row in self.classifier.calibrated(logits)], embeddings

    def _answer(self, row: np.ndarray) -> Prediction:
        order = np.argsort(row)[::-1]
        names = self.class_names
        return Prediction(
            digit=names[order[0]],
            confidence=float(row[order[0]]),
            probabilities={name: float(p) for name, p in zip(names, row, strict=True)},
            top3=[{"digit": names[i], "probability": float(row[i])} for i in order[:3]],
            unsure=bool(row[order[0]] < self.confidence_floor),
        )


def load_predictor(
    source: str, threads: int | None = None, precision: Precision | None = None
) -> Predictor:
    """Load the model named by `source` (a directory, `models:/...` or `runs:/...`) at
    `precision` (None: $DIGITOPS_PRECISION, else fp32)."""
    precision = precision or precision_from_env()
    name, version = "local", "local"
    if source.startswith(("models:/", "runs:/")):
        directory, name, version = _download(source)
    else:
        directory = Path(source)
    try:
        classifier = OnnxClassifier.load(directory, threads or serving_threads(), precision)
    except ModelError as exc:  # name what the user gave, not a download folder
        raise ModelError(f"{source}: {str(exc).removeprefix(f'{directory}: ')}") from None
    return Predictor(
        classifier=classifier,
        source=source,
        version=version,
        name=name,
        metrics=classifier.card.metrics.model_dump(),
        confidence_floor=confidence_floor(),
    )


def confidence_floor() -> float:
    """The confidence below which an answer is `unsure`: $DIGITOPS_CONFIDENCE_FLOOR, else the
    default. Read where a predictor loads, so the service's workers, its challenger, Lambda and
    `digitops predict` all answer alike."""
    value = os.environ.get(CONFIDENCE_FLOOR_ENV)
    if value is None:
        return DEFAULT_CONFIDENCE_FLOOR
    try:
        floor = float(value)
    except ValueError:
        floor = -1.0
    if not 0.0 <= floor <= 1.0:
        raise ModelError(f"{CONFIDENCE_FLOOR_ENV}={value!r}: not a confidence between 0 and 1")
    return floor


def precision_from_env() -> Precision:
    """The precision a predictor runs at: $DIGITOPS_PRECISION (fp32 or int8), else fp32. Read
    where a predictor loads, like the confidence floor."""
    value = os.environ.get(PRECISION_ENV) or "fp32"
    if value not in PRECISIONS:
        choices = " or ".join(PRECISIONS)
        raise ModelError(f"{PRECISION_ENV}={value!r}: not a precision; use {choices}")
    return value


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
    if (named := alias_of(f"models:/{ref}")) is not None:
        name, alias = named
        return name, str(client.get_model_version_by_alias(name, alias).version)
    name, _, version = ref.partition("/")
    return name, version


def alias_of(source: str) -> tuple[str, str] | None:
    """(model name, alias) of a `models:/name@alias` source; None for anything else (a
    directory, a run, a pinned version such as `models:/name/3`)."""
    if not source.startswith("models:/") or "@" not in source:
        return None
    name, alias = source.removeprefix("models:/").split("@", 1)
    return name, alias


class ServedModel:
    """The predictor a service answers with. When it was loaded through an alias
    (`models:/digit-classifier@production`), it follows the alias: `refresh` resolves it again
    and loads the version that moved in, so `digitops promote` and `rollback` reach a running
    service (each worker follows on its own; a request in flight finishes on the version it
    started with). A registry that cannot be reached leaves the current version serving."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.alias = alias_of(predictor.source)  # None: a source that never moves

    def refresh(self) -> bool:
        """Load the version the alias names now, if it moved; True when it did."""
        if self.alias is None:
            return False
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        name, alias = self.alias
        try:
            version = str(MlflowClient().get_model_version_by_alias(name, alias).version)
            if version == self.predictor.version:
                return False
            replacement = load_predictor(self.predictor.source, precision=self.predictor.precision)
        except (MlflowException, ModelError, OSError) as exc:
            log.warning(
                "%s: cannot follow the alias (%s); still serving version %s",
                self.predictor.source,
                exc,
                self.predictor.version,
            )
            return False
        log.warning(
            "%s moved: serving version %s (was %s)",
            self.predictor.source,
            replacement.version,
            self.predictor.version,
        )
        self.predictor = replacement
        return True
