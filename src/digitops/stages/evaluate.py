"""Stage `evaluate`: score the exported ONNX model on the test split.

Writes `metrics.json` (accuracy, per-class precision/recall/F1), `confusion_matrix.png` and
`misclassified.png`, and adds them to the training run in MLflow when the model has one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitops.config import Config
from digitops.data.dataset import load_dataset
from digitops.errors import ModelError
from digitops.fileio import atomic_dir, read_json, write_json
from digitops.stages.train import MODEL_CARD

log = logging.getLogger(__name__)

METRICS = "metrics.json"
REPORT = "report.html"


@dataclass(frozen=True)
class EvaluateResult:
    """The numbers `evaluate` reports."""

    report_dir: Path
    accuracy: float
    macro_f1: float
    test_images: int
    misclassified: int


def run(config: Config, model_dir: Path, data_dir: Path, out_dir: Path) -> EvaluateResult:
    """Evaluate `model_dir` on the test split of `data_dir`; write the report to `out_dir`."""
    card = load_model_card(model_dir)
    dataset = load_dataset(data_dir)
    check_classes(model_dir, card, dataset.class_names)
    test = dataset.split("test")
    logits = predict_logits(model_dir / "model.onnx", test.images, config.evaluate.batch_size)
    metrics = classification_metrics(logits, test.labels, dataset.class_names)
    metrics.update(model_dir=str(model_dir.resolve()), dataset_version=dataset.version)

    from digitops.stages.report_plots import (
        evaluation_html,
        plot_confusion_matrix,
        plot_misclassified,
    )

    predicted = logits.argmax(axis=1)
    with atomic_dir(out_dir, marker=METRICS) as tmp:
        plot_confusion_matrix(
            np.array(metrics["confusion_matrix"]), dataset.class_names, tmp / "confusion_matrix.png"
        )
        plot_misclassified(
            test.images,
            test.labels,
            predicted,
            dataset.class_names,
            config.evaluate.max_misclassified,
            tmp / "misclassified.png",
        )
        figures = {
            "confusion matrix": tmp / "confusion_matrix.png",
            "misclassified test digits": tmp / "misclassified.png",
        }
        (tmp / REPORT).write_text(evaluation_html(metrics, figures))
        write_json(tmp / METRICS, metrics)
    result = EvaluateResult(
        out_dir, metrics["accuracy"], metrics["macro"]["f1"], len(test), metrics["misclassified"]
    )
    if config.tracking.enabled and card.get("mlflow_run_id"):
        _track(config, card["mlflow_run_id"], result)
    return result


def load_model_card(model_dir: Path) -> dict[str, Any]:
    """Read `model.json` of a complete model directory."""
    for name in (MODEL_CARD, "model.onnx"):
        if not (model_dir / name).is_file():
            raise ModelError(
                f"{model_dir}: not a model directory (no {name}); run `digitops train` first"
            )
    card: dict[str, Any] = read_json(model_dir / MODEL_CARD)
    return card


def check_classes(model_dir: Path, card: dict[str, Any], class_names: list[str]) -> None:
    """The model must know exactly the data's classes, in the same order."""
    if card["class_names"] != class_names:
        raise ModelError(
            f"{model_dir}: the model knows classes {card['class_names']}, the data has "
            f"{class_names}; use data with matching classes"
        )


def predict_logits(onnx_path: Path, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits of the ONNX model for N×28×28 uint8 images."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise ModelError(f"{onnx_path}: not a loadable ONNX model ({exc})") from None
    name = session.get_inputs()[0].name
    out = [
        session.run(None, {name: images[i : i + batch_size, None].astype(np.float32) / 255.0})[0]
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out)


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, class_names: list[str]
) -> dict[str, Any]:
    """Accuracy, per-class and macro precision/recall/F1 and the confusion matrix (torchmetrics)."""
    import torch
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_confusion_matrix,
        multiclass_f1_score,
        multiclass_precision,
        multiclass_recall,
    )

    k = len(class_names)
    preds, target = torch.from_numpy(logits), torch.from_numpy(labels)
    per_class = {
        "precision": multiclass_precision(preds, target, k, average=None, zero_division=0),
        "recall": multiclass_recall(preds, target, k, average=None, zero_division=0),
        "f1": multiclass_f1_score(preds, target, k, average=None, zero_division=0),
    }
    support = torch.bincount(target, minlength=k)
    accuracy = float(multiclass_accuracy(preds, target, k, average="micro"))
    return {
        "accuracy": accuracy,
        "test_images": len(labels),
        "misclassified": int((preds.argmax(1) != target).sum()),
        "macro": {name: float(values.mean()) for name, values in per_class.items()},
        "per_class": {
            cls: {
                **{name: float(values[i]) for name, values in per_class.items()},
                "support": int(support[i]),
            }
            for i, cls in enumerate(class_names)
        },
        "confusion_matrix": multiclass_confusion_matrix(preds, target, k).tolist(),
    }


def _track(config: Config, run_id: str, result: EvaluateResult) -> None:
    from digitops.tracking import add_to_run

    metrics = {
        "test_accuracy": result.accuracy,
        "test_macro_f1": result.macro_f1,
        "test_misclassified": result.misclassified,
    }
    add_to_run(config.tracking, run_id, "evaluation", metrics, result.report_dir)
