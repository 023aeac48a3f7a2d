"""The `explain` stage's figures (attribution grid, deletion curves) and HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from digitops.reports import figure_html, html_page, pyplot, table_html

TITLES = {
    "integrated_gradients": "Integrated Gradients",
    "saliency": "Saliency",
    "occlusion": "Occlusion",
}
SAMPLES_PER_ROW = 2


def plot_attributions(
    images: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    confidence: np.ndarray,
    attributions: dict[str, np.ndarray],
    class_names: list[str],
    path: Path,
) -> None:
    """Per digit: the input, then each method's attribution over the digit's outline."""
    plt = pyplot()
    panels = 1 + len(attributions)
    rows = max(1, int(np.ceil(len(images) / SAMPLES_PER_ROW)))
    cols = panels * SAMPLES_PER_ROW
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.15, rows * 1.3 + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, image in enumerate(images):
        row, first = divmod(i, SAMPLES_PER_ROW)
        ax = axes[row, first * panels]
        wrong = labels[i] != predicted[i]
        ax.imshow(image, cmap="gray")
        ax.set_title(
            f"{class_names[labels[i]]}→{class_names[predicted[i]]} {confidence[i]:.0%}",
            fontsize=7,
            color="firebrick" if wrong else "black",
        )
        for k, (name, attribution) in enumerate(attributions.items(), start=1):
            ax = axes[row, first * panels + k]
            limit = float(np.abs(attribution[i]).max()) or 1.0
            ax.imshow(attribution[i], cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.contour(image, levels=[128], colors="black", linewidths=0.4)
            if row == 0:
                ax.set_title(TITLES.get(name, name), fontsize=7)
    fig.suptitle("true→predicted confidence; red: evidence for the predicted class", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_deletion_curves(curves: dict[str, np.ndarray], fractions: np.ndarray, path: Path) -> None:
    """Predicted-class confidence against the share of pixels removed, per method and random."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=100)
    for name, curve in curves.items():
        style = "k--" if name == "random" else "o-"
        ax.plot(fractions * 100, curve, style, label=TITLES.get(name, "random pixels"), ms=3)
    ax.set_xlabel("pixels removed, most attributed first (%)")
    ax.set_ylabel("confidence in the predicted class")
    ax.set_ylim(0, 1.02)
    ax.set_title("deletion curves (lower = more faithful attribution)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def explanation_html(metrics: dict[str, Any], figures: dict[str, Path]) -> str:
    """A self-contained HTML report (figures inlined) for the KFP UI and MLflow."""
    random = metrics["random"]
    rows = [
        [
            TITLES[name],
            f"{m['auc']:.3f}",
            f"{m['auc_ratio']:.2f}",
            f"{m['drop_at_10']:.3f}",
            f"{m['drop_ratio_at_10']:.1f}×",
        ]
        for name, m in metrics["methods"].items()
    ]
    rows.append(
        ["random pixels", f"{random['auc']:.3f}", "1.00", f"{random['drop_at_10']:.3f}", ""]
    )
    ig = metrics["methods"]["integrated_gradients"]
    body = (
        f"<h1>Explanations: Integrated Gradients is {ig['drop_ratio_at_10']:.1f}× as destructive "
        f"as random at 10 %</h1>"
        f"<p>Deletion curves over {metrics['images']} test digits: the mean confidence in the "
        "predicted class as the most-attributed pixels are set to the background first. A "
        "faithful method drops it faster than random pixels do: area under the curve (AUC, mean "
        "confidence) ratio below 1, drop at 10 % above random's.</p>"
        + table_html(["method", "AUC", "AUC / random", "drop at 10 %", "vs random"], rows)
        + "".join(figure_html(title, path) for title, path in figures.items())
    )
    return html_page("digitops explanation", body)
