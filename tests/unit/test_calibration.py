"""Temperature scaling and the calibration error, on logits with a known miscalibration."""

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from digitops.model.calibration import fit_temperature, nll, reliability, scaled_softmax


def overconfident(n: int = 4000, k: int = 10, scale: float = 3.0, seed: int = 0):
    """Logits drawn at temperature 1, then multiplied by `scale`: the model is overconfident
    by exactly that factor, so the best temperature is about `scale`."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, k))
    labels = np.array([rng.choice(k, p=p) for p in scaled_softmax(logits)])
    return logits * scale, labels


def test_the_fitted_temperature_undoes_a_known_overconfidence():
    logits, labels = overconfident(scale=3.0)
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert nll(logits, labels, temperature) < nll(logits, labels)


def test_scaling_lowers_the_calibration_error_and_keeps_every_answer():
    logits, labels = overconfident(scale=3.0)
    temperature = fit_temperature(logits, labels)
    before = reliability(scaled_softmax(logits), labels)
    after = reliability(scaled_softmax(logits, temperature), labels)
    assert after.ece < before.ece / 3
    assert (scaled_softmax(logits, temperature).argmax(1) == logits.argmax(1)).all()


@pytest.mark.parametrize("bins", [5, 15])
def test_the_error_matches_torchmetrics(bins: int):
    logits, labels = overconfident(n=2000, scale=2.0, seed=1)
    probabilities = scaled_softmax(logits)
    expected = multiclass_calibration_error(
        torch.from_numpy(probabilities), torch.from_numpy(labels), 10, n_bins=bins, norm="l1"
    )
    assert reliability(probabilities, labels, bins).ece == pytest.approx(float(expected), abs=1e-6)


def test_the_curve_counts_every_image_once():
    logits, labels = overconfident(n=500)
    curve = reliability(scaled_softmax(logits), labels)
    assert sum(b["count"] for b in curve.bins) == 500
    assert all(b["low"] <= b["confidence"] <= b["high"] for b in curve.bins)
