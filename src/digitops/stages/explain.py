"""Stage `explain`: Captum attributions of the trained model, and how faithful they are.

Integrated Gradients, Saliency and Occlusion explain the predicted class of a few test digits of
every class and of misclassified ones (`attributions.png`). Faithfulness is measured by deletion
curves: the predicted-class confidence as the most-attributed pixels are removed first, against
removing random pixels (`deletion_curves.png`, `metrics.json`). All of it is in `report.html`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitops.config import Config, ExplainConfig
from digitops.data.dataset import load_dataset
from digitops.errors import ModelError
from digitops.fileio import atomic_dir, write_json
from digitops.model.artifact import CHECKPOINT, check_classes, load_card
from digitops.results import StageResult, metric

log = logging.getLogger(__name__)

METRICS = "metrics.json"
REPORT = "report.html"
METHODS = ("integrated_gradients", "saliency", "occlusion")
# The share of pixels the headline comparison removes (the "top 10 %").
REPORTED_FRACTION = 0.1


@dataclass(frozen=True)
class ExplainResult(StageResult):
    """The numbers `explain` reports: per method, the deletion AUC ratio against random
    (metrics `<method>_auc_ratio`, `<method>_drop_at_10`, `random_drop_at_10`)."""

    title = "explained model"
    out_dir: Path
    auc_ratio: dict[str, float] = metric()
    drop_at_10: dict[str, float] = metric()
    random_drop_at_10: float = metric()
    images: int = 0
    seconds: float = 0.0


def run(config: Config, model_dir: Path, data_dir: Path, out_dir: Path) -> ExplainResult:
    """Explain the model in `model_dir` on the test split of `data_dir`; write to `out_dir`."""
    import torch

    started = time.perf_counter()
    card = load_card(model_dir)
    dataset = load_dataset(data_dir)
    check_classes(model_dir, card, dataset.class_names)
    cfg = config.explain
    net = load_network(model_dir)
    test = dataset.split("test")
    x = torch.from_numpy(test.images).float().div_(255.0).unsqueeze(1)
    with torch.no_grad():
        probs = torch.cat([net(batch).softmax(1) for batch in x.split(1000)])
    predicted = probs.argmax(1)

    shown = _pick_examples(test.labels, predicted.numpy(), cfg)
    attribute = _attributors(net, cfg)
    shown_attr = {name: fn(x[shown], predicted[shown]) for name, fn in attribute.items()}

    rng = np.random.default_rng(cfg.seed)
    sample = torch.from_numpy(
        rng.choice(len(x), min(cfg.faithfulness_images, len(x)), replace=False)
    )
    fractions = deletion_fractions(cfg)
    targets = predicted[sample]
    curves = {
        name: deletion_curve(net, x[sample], targets, fn(x[sample], targets), fractions)
        for name, fn in attribute.items()
    }
    random_scores = torch.from_numpy(rng.random((len(sample), 28 * 28))).float()
    curves["random"] = deletion_curve(
        net, x[sample], targets, random_scores.view(-1, 1, 28, 28), fractions
    )
    metrics = faithfulness_metrics(curves, fractions)
    metrics.update(
        images=len(sample),
        model_dir=str(model_dir.resolve()),
        dataset_version=dataset.version,
    )

    from digitops.stages import explain_report

    with atomic_dir(out_dir, marker=METRICS) as tmp:
        figures = {
            "attributions (red: for the predicted class, blue: against)": tmp / "attributions.png",
            "deletion curves": tmp / "deletion_curves.png",
        }
        explain_report.plot_attributions(
            test.images[shown.numpy()],
            test.labels[shown.numpy()],
            predicted[shown].numpy(),
            probs[shown, predicted[shown]].numpy(),
            {name: a.squeeze(1).numpy() for name, a in shown_attr.items()},
            dataset.class_names,
            figures["attributions (red: for the predicted class, blue: against)"],
        )
        explain_report.plot_deletion_curves(curves, fractions, figures["deletion curves"])
        (tmp / REPORT).write_text(explain_report.explanation_html(metrics, figures))
        write_json(tmp / METRICS, metrics)
    result = ExplainResult(
        out_dir,
        {name: metrics["methods"][name]["auc_ratio"] for name in METHODS},
        {name: metrics["methods"][name]["drop_at_10"] for name in METHODS},
        metrics["random"]["drop_at_10"],
        len(sample),
        time.perf_counter() - started,
    )
    if config.tracking.enabled and card.mlflow_run_id:
        from digitops.tracking import add_to_run

        add_to_run(config.tracking, card.mlflow_run_id, "explanation", result, out_dir)
    return result


def load_network(model_dir: Path) -> Any:
    """The trained torch network (normalisation inside, input N×1×28×28 in [0, 1]), eval mode."""
    from digitops.model.module import DigitClassifier

    checkpoint = model_dir / CHECKPOINT
    if not checkpoint.is_file():
        raise ModelError(f"{model_dir}: no model.ckpt to explain; run `digitops train` first")
    module = DigitClassifier.load_from_checkpoint(checkpoint, map_location="cpu")
    return module.net.eval()


def _attributors(net: Any, cfg: ExplainConfig) -> dict[str, Callable[..., Any]]:
    """Captum methods as `fn(inputs, targets) -> attributions` of the inputs' shape."""
    from captum.attr import IntegratedGradients, Occlusion, Saliency

    integrated, saliency, occlusion = IntegratedGradients(net), Saliency(net), Occlusion(net)
    window, stride = cfg.occlusion_window, cfg.occlusion_stride

    def integrated_gradients(x: Any, target: Any) -> Any:
        # Baseline: an empty (black) image, the background of every digit.
        return integrated.attribute(
            x, baselines=x * 0, target=target, n_steps=cfg.ig_steps, internal_batch_size=512
        ).detach()

    def saliency_map(x: Any, target: Any) -> Any:
        return saliency.attribute(x.clone().requires_grad_(), target=target, abs=True).detach()

    def occluded(x: Any, target: Any) -> Any:
        return occlusion.attribute(
            x,
            sliding_window_shapes=(1, window, window),
            strides=(1, stride, stride),
            baselines=0.0,
            target=target,
            perturbations_per_eval=16,
        ).detach()

    methods = (integrated_gradients, saliency_map, occluded)
    return {name: _in_chunks(fn) for name, fn in zip(METHODS, methods, strict=True)}


def _in_chunks(attribute: Callable[..., Any], size: int = 100) -> Callable[..., Any]:
    """Attribute `size` images at a time: occlusion multiplies each by its patch count."""
    import torch

    def chunked(x: Any, target: Any) -> Any:
        parts = [
            attribute(xs, ts) for xs, ts in zip(x.split(size), target.split(size), strict=True)
        ]
        return torch.cat(parts)

    return chunked


def _pick_examples(labels: np.ndarray, predicted: np.ndarray, cfg: ExplainConfig) -> Any:
    """Indices: the first `per_class` correct test digits of each class, then misclassified."""
    import torch

    correct = [
        i
        for c in np.unique(labels)
        for i in np.flatnonzero((labels == c) & (predicted == c))[: cfg.per_class]
    ]
    wrong = list(np.flatnonzero(labels != predicted)[: cfg.max_misclassified])
    return torch.tensor(correct + wrong, dtype=torch.long)


def deletion_fractions(cfg: ExplainConfig) -> np.ndarray:
    """Shares of pixels removed along the deletion curve (always including the reported one)."""
    grid = np.linspace(0.0, cfg.deletion_max, cfg.deletion_steps + 1)
    return np.union1d(grid, [REPORTED_FRACTION])


def deletion_curve(
    net: Any, x: Any, targets: Any, scores: Any, fractions: np.ndarray
) -> np.ndarray:
    """Mean predicted-class confidence (N images × fractions) as the highest-scored pixels are
    set to the background value (0) first."""
    import torch

    n, pixels = len(x), x[0].numel()
    order = scores.reshape(n, pixels).argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(pixels).expand(n, pixels))
    confidence = np.empty((n, len(fractions)))
    flat = x.reshape(n, pixels)
    with torch.no_grad():
        for j, fraction in enumerate(fractions):
            removed = rank < round(float(fraction) * pixels)
            probs = net(flat.masked_fill(removed, 0.0).view_as(x)).softmax(1)
            confidence[:, j] = probs.gather(1, targets.view(-1, 1)).squeeze(1).numpy()
    mean_confidence: np.ndarray = confidence.mean(axis=0)
    return mean_confidence


def faithfulness_metrics(curves: dict[str, np.ndarray], fractions: np.ndarray) -> dict[str, Any]:
    """Per curve: area (mean confidence over the removed share), drop at the reported share;
    per method: both against random (AUC ratio < 1 and drop ratio > 1 mean faithful)."""
    at = int(np.flatnonzero(np.isclose(fractions, REPORTED_FRACTION))[0])

    def summary(curve: np.ndarray) -> dict[str, float]:
        area = float(np.trapezoid(curve, fractions) / (fractions[-1] - fractions[0]))
        return {"auc": area, "drop_at_10": float(curve[0] - curve[at])}

    random = summary(curves["random"])
    methods = {}
    for name in METHODS:
        own = summary(curves[name])
        methods[name] = own | {
            "auc_ratio": own["auc"] / random["auc"],
            "drop_ratio_at_10": own["drop_at_10"] / max(random["drop_at_10"], 1e-6),
        }
    return {
        "methods": methods,
        "random": random,
        "fractions": [float(f) for f in fractions],
        "curves": {name: [float(v) for v in curve] for name, curve in curves.items()},
    }
