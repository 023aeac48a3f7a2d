"""Stage `evaluate`: score the exported ONNX model on the test split.

Writes `metrics.json` (accuracy, per-class precision/recall/F1, the confusion matrix,
calibration before and after the model's temperature, the behavioral tests; the same for the
int8 file beside the model, with its size and agreement with fp32),
`confusion_matrix.png`, `calibration.png` and `misclassified.png`, and adds them to the training
run in MLflow when the model has one. The registry's gate reads `metrics.json`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitops.config import Config
from digitops.contracts import Evaluation
from digitops.data.dataset import Split, load_dataset
from digitops.fileio import atomic_dir
from digitops.model.artifact import (
    INT8_PLACES,
    OnnxClassifier,
    check_classes,
    load_card,
    model_file,
)
from digitops.model.calibration import DEFAULT_CONFIDENCE_FLOOR, reliability, scaled_softmax
from digitops.results import StageResult, metric
from digitops.stages.behavior import run_tests

log = logging.getLogger(__name__)

REPORT = "report.html"


@dataclass(frozen=True)
class EvaluateResult(StageResult):
    """The numbers `evaluate` reports."""

    title = "evaluated model"
    report_dir: Path
    test_accuracy: float = metric()
    test_macro_f1: float = metric()
    test_misclassified: int = metric()
    test_images: int = metric()
    test_ece: float = metric()
    test_ece_uncalibrated: float = metric()
    unsure_share: float = metric()
    test_accuracy_int8: float | None = metric()


def run(config: Config, model_dir: Path, data_dir: Path, out_dir: Path) -> EvaluateResult:
    """Evaluate `model_dir` on the test split of `data_dir`; write the report to `out_dir`."""
    card = load_card(model_dir)
    dataset = load_dataset(data_dir)
    check_classes(model_dir, card, dataset.class_names)
    test = dataset.split("test")
    classifier = OnnxClassifier.load(model_dir)
    logits = classifier.logits(test.images, config.evaluate.batch_size)
    evaluation = Evaluation.model_validate(
        quality(classifier, logits, test, dataset.class_names, config)
        | {
            "model_dir": str(model_dir.resolve()),
            "dataset_version": dataset.version,
            "int8": _int8_quality(model_dir, logits, test, dataset.class_names, config),
        }
    )

    from digitops.stages.report_plots import (
        evaluation_html,
        plot_calibration,
        plot_confusion_matrix,
        plot_misclassified,
    )

    predicted = logits.argmax(axis=1)
    with atomic_dir(out_dir, marker=Evaluation.file_name) as tmp:
        plot_confusion_matrix(
            np.array(evaluation.confusion_matrix), dataset.class_names, tmp / "confusion_matrix.png"
        )
        plot_misclassified(
            test.images,
            test.labels,
            predicted,
            dataset.class_names,
            config.evaluate.max_misclassified,
            tmp / "misclassified.png",
        )
        plot_calibration(evaluation.calibration, tmp / "calibration.png")
        figures = {
            "confusion matrix": tmp / "confusion_matrix.png",
            "calibration": tmp / "calibration.png",
            "misclassified test digits": tmp / "misclassified.png",
        }
        (tmp / REPORT).write_text(evaluation_html(evaluation.model_dump(), figures))
        evaluation.write(tmp)
    result = EvaluateResult(
        out_dir,
        evaluation.test_accuracy,
        evaluation.test_macro_f1,
        evaluation.test_misclassified,
        evaluation.test_images,
        evaluation.calibration["ece_after"],
        evaluation.calibration["ece_before"],
        evaluation.calibration["unsure"][str(DEFAULT_CONFIDENCE_FLOOR)],
        evaluation.int8.test_accuracy if evaluation.int8 else None,
    )
    if config.tracking.enabled and card.mlflow_run_id:
        from digitops.tracking import add_to_run

        add_to_run(config.tracking, card.mlflow_run_id, "evaluation", result, out_dir)
    return result


def quality(
    classifier: OnnxClassifier,
    logits: np.ndarray,
    test: Split,
    class_names: list[str],
    config: Config,
) -> dict[str, Any]:
    """What the gate judges of one model file (`Quality`): classification metrics, calibration
    at the card's temperature, the behavioral tests."""
    return classification_metrics(logits, test.labels, class_names) | {
        "calibration": calibration(logits, test.labels, classifier.card.temperature),
        "behavior": {
            found.name: found.as_dict()
            for found in run_tests(classifier, test.images, config.evaluate)
        },
    }


def _int8_quality(
    model_dir: Path, fp32_logits: np.ndarray, test: Split, class_names: list[str], config: Config
) -> dict[str, Any] | None:
    """The int8 file's `Int8Quality`, or None for a model trained before int8 files."""
    if not any((model_dir / place).is_file() for place in INT8_PLACES):
        return None
    int8 = OnnxClassifier.load(model_dir, precision="int8")
    logits = int8.logits(test.images, config.evaluate.batch_size)
    agreement = float((logits.argmax(axis=1) == fp32_logits.argmax(axis=1)).mean())
    return quality(int8, logits, test, class_names, config) | {
        "size_bytes": model_file(model_dir, "int8").stat().st_size,
        "agreement": agreement,
    }


# The confidence floors whose unsure shares are reported: a few, and always the service's.
FLOORS = sorted({DEFAULT_CONFIDENCE_FLOOR, 0.5, 0.6, 0.7, 0.8, 0.9})


def calibration(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, Any]:
    """Calibration on the test split without and with the model's temperature, and how many
    test digits each confidence floor would answer `unsure` (and how many of those are wrong)."""
    raw = reliability(scaled_softmax(logits), labels)
    probabilities = scaled_softmax(logits, temperature)
    scaled = reliability(probabilities, labels)
    confidence, wrong = probabilities.max(1), probabilities.argmax(1) != labels
    unsure = {str(floor): float((confidence < floor).mean()) for floor in FLOORS}
    errors_caught = {str(floor): int((wrong & (confidence < floor)).sum()) for floor in FLOORS}
    return {
        "temperature": temperature,
        "ece_before": raw.ece,
        "ece_after": scaled.ece,
        "bins_before": raw.bins,
        "bins_after": scaled.bins,
        "unsure": unsure,
        "errors_caught": errors_caught,
        "errors": int(wrong.sum()),
    }


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
        "test_accuracy": accuracy,
        "test_macro_f1": float(per_class["f1"].mean()),
        "test_images": len(labels),
        "test_misclassified": int((preds.argmax(1) != target).sum()),
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
