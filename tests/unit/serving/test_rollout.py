"""Canary routing: sticky per client, the configured share; a challenger is named by an alias."""

import pytest

from digitops.errors import ModelError
from digitops.serving.rollout import Challenger, RolloutSettings

SOURCE = "models:/digit-classifier@candidate"


def test_a_client_always_lands_on_the_same_side():
    canary = Challenger(RolloutSettings(SOURCE, "canary", 0.3))
    first = [canary.canary(f"client-{i}") for i in range(1000)]
    assert first == [canary.canary(f"client-{i}") for i in range(1000)]
    assert 0.26 < sum(first) / 1000 < 0.34


@pytest.mark.parametrize(("share", "expected"), [(0.0, 0), (1.0, 1000)])
def test_a_share_of_zero_or_one_sends_nobody_or_everybody(share, expected):
    canary = Challenger(RolloutSettings(SOURCE, "canary", share))
    assert sum(canary.canary(f"client-{i}") for i in range(1000)) == expected


def test_shadow_mode_never_answers_with_the_challenger():
    shadow = Challenger(RolloutSettings(SOURCE, "shadow", 1.0))
    assert not any(shadow.canary(f"client-{i}") for i in range(100))


@pytest.mark.parametrize(
    ("source", "mode", "share", "message"),
    [
        ("models:/digit-classifier/3", "canary", 0.1, "a challenger is named by an alias"),
        ("artifacts/model", "shadow", 0.1, "a challenger is named by an alias"),
        (SOURCE, "blue-green", 0.1, "rollout mode 'blue-green': one of shadow, canary"),
        (SOURCE, "canary", 1.5, "canary share 1.5: between 0 and 1"),
    ],
)
def test_bad_rollout_settings_are_refused_with_one_line(source, mode, share, message):
    with pytest.raises(ModelError, match=message):
        RolloutSettings(source, mode, share)
