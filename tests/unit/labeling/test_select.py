"""Active learning's choice: uncertainty scores, and a batch that is not near-copies."""

import numpy as np
import pytest

from digitops.labeling.select import choose, score


def test_margin_and_entropy_measure_doubt():
    scores = score(np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]]))
    assert scores.margin == pytest.approx([1.0, 0.0, 0.0])
    assert scores.entropy == pytest.approx([0.0, np.log(2) / np.log(3), 1.0])
    assert scores.uncertainty("margin") == pytest.approx([0.0, 1.0, 1.0])
    assert list(scores.predicted) == [0, 0, 0] and scores.confidence[1] == 0.5


def pool(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """60 near-copies of one hard case (very unsure), then 10 other cases of 20 images each,
    a little less unsure."""
    probabilities, embeddings = [], []
    for case in range(11):
        copies, gap = (60, 0.01) if case == 0 else (20, 0.1)
        centre = rng.normal(size=16) * 5
        for _ in range(copies):
            top, second = 0.5, 0.5 - gap - rng.uniform(0, 0.005)
            p = np.full(10, (1 - top - second) / 8)
            p[case % 10], p[(case + 1) % 10] = top, second
            probabilities.append(p)
            embeddings.append(centre + rng.normal(size=16) * 0.1)
    return np.array(probabilities), np.array(embeddings)


def test_uncertainty_alone_takes_near_copies_diversity_spreads_the_batch():
    probabilities, embeddings = pool(np.random.default_rng(0))
    scores = score(probabilities)
    cases = np.repeat(np.arange(11), [60] + [20] * 10)

    unsure = choose(scores, embeddings, 10, "uncertainty")
    assert set(cases[unsure]) == {0}  # ten copies of the one hard case

    spread = choose(scores, embeddings, 10, "uncertainty-diversity", seed=0)
    assert len(set(spread)) == 10 and len(set(cases[spread])) >= 8
    doubt = scores.uncertainty("margin")
    assert list(doubt[spread]) == sorted(doubt[spread], reverse=True)  # least certain first


def test_random_is_seeded_and_never_repeats():
    scores = score(np.full((50, 10), 0.1))
    first = choose(scores, None, 20, "random", seed=3)
    assert list(first) == list(choose(scores, None, 20, "random", seed=3))
    assert len(set(first)) == 20 and list(first) != list(choose(scores, None, 20, "random", seed=4))


def test_a_budget_over_the_pool_takes_the_pool():
    probabilities, embeddings = pool(np.random.default_rng(1))
    chosen = choose(score(probabilities[:5]), embeddings[:5], 50, "uncertainty-diversity")
    assert sorted(chosen) == [0, 1, 2, 3, 4]


def test_a_budget_near_the_pool_clusters_and_picks_distinct_images():
    probabilities, embeddings = pool(np.random.default_rng(2))
    chosen = choose(score(probabilities[:30]), embeddings[:30], 29, "uncertainty-diversity")
    assert len(chosen) == len(set(chosen)) == 29 and set(chosen) <= set(range(30))
