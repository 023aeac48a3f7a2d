"""Behavioral tests of a digit model, in the spirit of CheckList (Ribeiro et al., 2020).

Invariance: a perturbation a reader would shrug at (a small rotation or shift, thicker or
thinner strokes, fainter ink) must keep the model's answer. Each test applies fixed
Albumentations transforms to a sample of test digits and reports the share of answers kept.
Directional: an image that is no digit as the model was taught (a digit in inverted colours, a
blank or noise image) must not be answered with high confidence; each test reports the share that
is. `evaluate` runs them; the registry's gate reads the results (`digitops.registry.gate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from digitops.config import EvaluateConfig
from digitops.contracts import Behavior
from digitops.model.artifact import OnnxClassifier


@dataclass(frozen=True)
class BehaviorTest:
    """One test's result: `rate` is the share of answers kept (invariance) or the share answered
    with high confidence (directional)."""

    name: str
    kind: Literal["invariance", "directional"]
    description: str
    rate: float
    images: int

    def as_dict(self) -> Behavior:
        """The result as `metrics.json` keeps it (the `Evaluation` contract), by name."""
        return Behavior(
            kind=self.kind, description=self.description, rate=self.rate, images=self.images
        )


def run_tests(
    classifier: OnnxClassifier, images: np.ndarray, cfg: EvaluateConfig
) -> list[BehaviorTest]:
    """Every behavioral test on a seeded sample of `images` (N×28×28 uint8 test digits)."""
    rng = np.random.default_rng(cfg.seed)
    sample = images[rng.permutation(len(images))[: cfg.behavior_images]]
    answers = classifier.logits(sample).argmax(1)
    results = [
        _invariance(classifier, sample, answers, name, description, transforms)
        for name, description, transforms in _perturbations(cfg)
    ]
    inverted = 255 - sample
    blank = _blank_images(rng, cfg.behavior_images)
    confident = cfg.high_confidence
    results += [
        _directional(classifier, inverted, "inverted", "dark ink on a light background", confident),
        _directional(classifier, blank, "blank", "empty, uniform grey or noise images", confident),
    ]
    return results


def _perturbations(cfg: EvaluateConfig) -> list[tuple[str, str, list[Any]]]:
    """(name, description, the transforms applied one at a time) of each invariance test."""
    import albumentations as A

    r, s, k = cfg.behavior_rotate, cfg.behavior_shift_px, cfg.behavior_stroke_px
    return [
        (
            "rotation",
            f"rotated by {r:g}° either way",
            [A.Affine(rotate=(a, a), p=1.0) for a in (r, -r)],
        ),
        (
            "shift",
            f"shifted by {s} px in each of four directions",
            [
                A.Affine(translate_px={"x": (dx, dx), "y": (dy, dy)}, p=1.0)
                for dx, dy in ((s, 0), (-s, 0), (0, s), (0, -s))
            ],
        ),
        (
            "thicker",
            f"strokes dilated with a {k}×{k} kernel",
            [A.Morphological(scale=(k, k), operation="dilation", p=1.0)],
        ),
        (
            "thinner",
            f"strokes eroded with a {k}×{k} kernel",
            [A.Morphological(scale=(k, k), operation="erosion", p=1.0)],
        ),
        (
            "fainter",
            f"ink contrast lowered by {cfg.behavior_contrast:.0%}",
            [
                A.RandomBrightnessContrast(
                    brightness_limit=(0, 0),
                    contrast_limit=(-cfg.behavior_contrast, -cfg.behavior_contrast),
                    p=1.0,
                )
            ],
        ),
    ]


def _invariance(
    classifier: OnnxClassifier,
    sample: np.ndarray,
    answers: np.ndarray,
    name: str,
    description: str,
    transforms: list[Any],
) -> BehaviorTest:
    kept = []
    for transform in transforms:
        moved = np.stack([transform(image=image)["image"] for image in sample])
        kept.append(classifier.logits(moved).argmax(1) == answers)
    rate = float(np.concatenate(kept).mean())
    return BehaviorTest(name, "invariance", description, rate, len(sample) * len(transforms))


def _directional(
    classifier: OnnxClassifier,
    images: np.ndarray,
    name: str,
    description: str,
    confident: float,
) -> BehaviorTest:
    confidence = classifier.probabilities(images).max(1)
    rate = float((confidence >= confident).mean())
    described = f"{description}, answered at {confident:.0%} or more"
    return BehaviorTest(name, "directional", described, rate, len(images))


def _blank_images(rng: np.random.Generator, count: int) -> np.ndarray:
    """Uniform images from black to white, and as many of uniform noise of rising strength."""
    levels = np.linspace(0, 255, count // 2).astype(np.uint8)
    uniform = np.broadcast_to(levels[:, None, None], (len(levels), 28, 28))
    strength = np.linspace(0, 255, count - len(levels))[:, None, None]
    noise = (rng.random((count - len(levels), 28, 28)) * strength).astype(np.uint8)
    return np.concatenate([uniform, noise])
