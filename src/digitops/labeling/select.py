"""Active learning: which unlabeled production images a person should label next.

Uncertainty sampling alone fills a batch with near-copies: the fifty least certain images of a
stream are often fifty versions of one hard case. `uncertainty-diversity` follows Zhdanov,
"Diverse mini-batch Active Learning" (2019): take the `pool_factor`×budget most uncertain
images, cluster their embeddings with k-means (one cluster per label in the budget, each image
weighted by its uncertainty), and label the image nearest each cluster's centre. `uncertainty`
takes the least certain images as they come; `random` is the baseline both must beat
(`benchmarks/active_learning.py` measures them).

Scores come from one model for the whole pool: stored embeddings of different model versions
live in different spaces, and the version to improve is the one that will be retrained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Strategy = Literal["uncertainty-diversity", "uncertainty", "random"]
Measure = Literal["margin", "entropy"]
STRATEGIES: tuple[Strategy, ...] = ("uncertainty-diversity", "uncertainty", "random")
MEASURES: tuple[Measure, ...] = ("margin", "entropy")
POOL_FACTOR = 10  # uncertainty-diversity clusters the budget×10 least certain images


@dataclass(frozen=True)
class Scores:
    """Per image: the model's answer and how unsure it is."""

    predicted: np.ndarray  # class index
    confidence: np.ndarray  # top probability
    margin: np.ndarray  # top probability minus the runner-up's (0 = a coin toss)
    entropy: np.ndarray  # of the class distribution, over log(classes): 0 sure ... 1 uniform

    def uncertainty(self, measure: Measure) -> np.ndarray:
        """Higher = less sure: 1 - margin, or the normalized entropy."""
        return 1.0 - self.margin if measure == "margin" else self.entropy


def score(probabilities: np.ndarray) -> Scores:
    """The scores of an N×C matrix of class probabilities."""
    p = np.asarray(probabilities, dtype=np.float64)
    top2 = np.sort(p, axis=1)[:, -2:]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return Scores(
        predicted=p.argmax(axis=1),
        confidence=top2[:, 1],
        margin=top2[:, 1] - top2[:, 0],
        entropy=-terms.sum(axis=1) / np.log(p.shape[1]),
    )


def choose(
    scores: Scores,
    embeddings: np.ndarray | None,
    budget: int,
    strategy: Strategy = "uncertainty-diversity",
    measure: Measure = "margin",
    seed: int = 0,
    pool_factor: int = POOL_FACTOR,
) -> np.ndarray:
    """Indices of the `budget` images to label, least certain first (random: in drawn order)."""
    n = len(scores.margin)
    budget = min(budget, n)
    if strategy == "random":
        return np.random.default_rng(seed).choice(n, size=budget, replace=False)
    doubt = scores.uncertainty(measure)
    ranked = np.argsort(-doubt, kind="stable")
    if strategy == "uncertainty" or budget == n:
        return ranked[:budget]
    if embeddings is None:
        raise ValueError("uncertainty-diversity needs the model's embeddings")
    pool = ranked[: max(budget, pool_factor * budget)]
    picked = _nearest_to_centres(embeddings[pool], doubt[pool], budget, seed)
    chosen = pool[picked]
    return chosen[np.argsort(-doubt[chosen], kind="stable")]


def _nearest_to_centres(vectors: np.ndarray, weights: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Positions of the k vectors nearest the centres of an uncertainty-weighted k-means."""
    from sklearn.cluster import KMeans

    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    kmeans = KMeans(n_clusters=k, n_init=1, random_state=seed)
    clusters = kmeans.fit_predict(unit, sample_weight=np.maximum(weights, 1e-6))
    distances = np.linalg.norm(unit - kmeans.cluster_centers_[clusters], axis=1)
    picked = []
    for cluster in range(k):
        members = np.flatnonzero(clusters == cluster)
        if len(members):
            picked.append(members[np.argmin(distances[members])])
    if len(picked) < k:  # identical vectors leave a cluster empty: top up by uncertainty
        rest = np.setdiff1d(np.arange(len(vectors)), picked)
        picked.extend(rest[np.argsort(-weights[rest], kind="stable")][: k - len(picked)])
    return np.asarray(picked)
