"""Temperature scaling (Guo et al., 2017): one number that turns logits into honest confidences.

`train` fits the temperature on the validation split and keeps it in the model card; every
consumer of probabilities (serving, drift, selection, the monitor) divides the logits by it.
Dividing by one positive number never changes which digit wins, only how sure the model says it
is. No torch here: serving reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINS = 15  # equal-width confidence bins of the expected calibration error (as in Guo et al.)
BOUNDS = (0.05, 20.0)  # the temperatures searched
# Below this calibrated confidence the service answers `unsure` (its --confidence-floor), and
# evaluate counts the test digits it would have answered so.
DEFAULT_CONFIDENCE_FLOOR = 0.7


def scaled_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise probabilities of N×K logits divided by `temperature`."""
    scaled = logits / temperature
    exp = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels at `temperature`."""
    scaled = logits.astype(np.float64) / temperature
    top = scaled.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(scaled - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(log_z - scaled[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the labels' NLL (bounded scalar search, scipy)."""
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))),
        bounds=tuple(np.log(BOUNDS)),
        method="bounded",
    )
    return float(np.exp(found.x))


@dataclass(frozen=True)
class Reliability:
    """Confidence against accuracy per bin: the calibration curve and its error."""

    ece: float  # expected calibration error: the bins' |accuracy - confidence|, weighted
    bins: list[dict[str, float]]  # per non-empty bin: low, high, confidence, accuracy, count


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> Reliability:
    """The calibration curve of N×K probabilities (top-1 confidence, equal-width bins).
    The ECE matches torchmetrics' `multiclass_calibration_error` (l1), which this module may
    not import: serving reads it."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # As torchmetrics bins (bucketize, right=True): low <= confidence < high, and a confidence of
    # exactly 1 in a bin of its own.
    which = np.searchsorted(edges, confidence, side="right") - 1
    table, ece = [], 0.0
    for b in range(bins + 1):
        members = which == b
        count = int(members.sum())
        if not count:
            continue
        conf, acc = float(confidence[members].mean()), float(correct[members].mean())
        ece += count / len(labels) * abs(acc - conf)
        table.append(
            {
                "low": float(edges[b]),
                "high": float(edges[min(b + 1, bins)]),
                "confidence": conf,
                "accuracy": acc,
                "count": count,
            }
        )
    return Reliability(float(ece), table)
