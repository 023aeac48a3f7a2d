"""Evaluation report figures (confusion matrix, calibration curve, misclassified digits) and the
HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from digitops.contracts import Calibration
from digitops.reports import figure_html, html_page, pyplot, table_html


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], path: Path) -> None:
    """Counts per (true, predicted) class, log-coloured so rare confusions stay visible."""
    plt = pyplot()
    from matplotlib.colors import LogNorm

    k = len(class_names)
    size = max(5.0, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(matrix + 1, cmap="Blues", norm=LogNorm())
    ax.set_xticks(range(k), class_names)
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix ({int(matrix.sum())} test images)")
    threshold = matrix.max() / 2
    for i in range(k):
        for j in range(k):
            if matrix[i, j]:
                ax.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if matrix[i, j] > threshold else "black",
                )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_calibration(calibration: Calibration, path: Path) -> None:
    """Reliability diagram: accuracy against confidence per bin, before and after the model's
    temperature (the diagonal is perfect calibration)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    curves = (
        ("softmax", calibration["bins_before"], calibration["ece_before"]),
        ("temperature-scaled", calibration["bins_after"], calibration["ece_after"]),
    )
    for label, bins, ece in curves:
        ax.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            marker="o",
            label=f"{label}: ECE {ece:.4f}",
        )
    ax.set_xlabel("confidence (mean per bin)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"calibration on test (temperature {calibration['temperature']:.3f})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_misclassified(
    images: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    class_names: list[str],
    limit: int,
    path: Path,
) -> None:
    """A grid of the first `limit` misclassified test digits, titled 'true → predicted'."""
    plt = pyplot()
    wrong = np.flatnonzero(predicted != labels)[:limit]
    cols = 8
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig, axes = plt.subplots(
        rows, cols, figsize=(cols * 1.2, rows * 1.35 + 0.4), dpi=100, squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong, strict=False):
        ax.imshow(images[i], cmap="gray_r")
        ax.set_title(
            f"{class_names[labels[i]]} → {class_names[predicted[i]]}", fontsize=8, color="firebrick"
        )
    fig.suptitle(
        f"misclassified: {int((predicted != labels).sum())} of {len(labels)}"
        + (f" (first {len(wrong)} shown)" if len(wrong) < (predicted != labels).sum() else ""),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def unsure_table(calibration: Calibration) -> tuple[list[str], list[list[Any]]]:
    """Per confidence floor: the share of test digits answered `unsure`, and the errors in it."""
    return (
        ["confidence floor", "test digits unsure", f"of the {calibration['errors']} errors"],
        [
            [f"{float(floor):.0%}", f"{share:.2%}", calibration["errors_caught"][floor]]
            for floor, share in calibration["unsure"].items()
        ],
    )


def _calibration_html(calibration: Calibration) -> str:
    return (
        f"<h2>Calibration</h2><p>Temperature {calibration['temperature']:.3f}: expected "
        f"calibration error {calibration['ece_before']:.4f} before, "
        f"{calibration['ece_after']:.4f} after.</p>" + table_html(*unsure_table(calibration))
    )


def evaluation_html(metrics: dict[str, Any], figures: dict[str, Path]) -> str:
    """A self-contained HTML report (figures inlined) for the KFP UI and MLflow."""
    rows = [
        [name, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", v["support"]]
        for name, v in metrics["per_class"].items()
    ]
    body = (
        f"<h1>Test accuracy {metrics['test_accuracy']:.2%}</h1>"
        f"<p>{metrics['test_misclassified']} of {metrics['test_images']} test images "
        "misclassified; "
        f"macro F1 {metrics['test_macro_f1']:.4f}.</p>"
        + "".join(figure_html(title, path) for title, path in figures.items())
        + table_html(["class", "precision", "recall", "F1", "support"], rows)
        + _calibration_html(metrics["calibration"])
        + "<h2>Behavioral tests</h2>"
        + table_html(
            ["test", "kind", "what", "rate", "images"],
            [
                [name, t["kind"], t["description"], f"{t['rate']:.1%}", t["images"]]
                for name, t in metrics["behavior"].items()
            ],
        )
    )
    return html_page("digitops evaluation", body)
