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
from digitops.contracts import Evaluation
from digitops.data.dataset import load_dataset
from digitops.fileio import atomic_dir
from digitops.model.artifact import OnnxClassifier, check_classes, load_card
from digitops.results import StageResult, metric

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


def run(config: Config, model_dir: Path, data_dir: Path, out_dir: Path) -> EvaluateResult:
    """Evaluate `model_dir` on the test split of `data_dir`; write the report to `out_dir`."""
    card = load_card(model_dir)
    dataset = load_dataset(data_dir)
    check_classes(model_dir, card, dataset.class_names)
    test = dataset.split("test")
    logits = OnnxClassifier.load(model_dir).logits(test.images, config.evaluate.batch_size)
    evaluation = Evaluation.model_validate(
        classification_metrics(logits, test.labels, dataset.class_names)
        | {"model_dir": str(model_dir.resolve()), "dataset_version": dataset.version}
    )

    from digitops.stages.report_plots import (
        evaluation_html,
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
        figures = {
            "confusion matrix": tmp / "confusion_matrix.png",
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
    )
    if config.tracking.enabled and card.mlflow_run_id:
        from digitops.tracking import add_to_run

        add_to_run(config.tracking, card.mlflow_run_id, "evaluation", result, out_dir)
    return result


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
