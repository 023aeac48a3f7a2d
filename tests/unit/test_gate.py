"""The registration gate's rules and the production history replay, without a registry."""

from types import SimpleNamespace

import pytest

from digitops.config import RegistryConfig
from digitops.registry import Version, gate, production_stack

PRODUCTION = Version(3, ["production"], {"test_accuracy": "0.9960"})
NO_DRIFT = SimpleNamespace(drifted=False, drifted_share=0.0, drifted_columns=[])
DRIFT = SimpleNamespace(drifted=True, drifted_share=0.6, drifted_columns=["ink_fraction"])


def test_a_better_model_without_drift_passes():
    decision = gate(RegistryConfig(), 0.9970, PRODUCTION, NO_DRIFT)
    assert decision.passed and decision.reasons == []


def test_the_first_model_passes_on_accuracy_alone():
    assert gate(RegistryConfig(), 0.9960, None, None).passed


def test_accuracy_below_the_threshold_is_named():
    decision = gate(RegistryConfig(), 0.9900, None, NO_DRIFT)
    assert not decision.passed
    assert decision.reasons == ["test accuracy 0.9900 < threshold 0.995"]


def test_small_dip_within_tolerance_is_no_regression():
    assert gate(RegistryConfig(regression_tolerance=0.001), 0.9955, PRODUCTION, NO_DRIFT).passed


def test_regression_beyond_tolerance_is_refused_even_above_the_threshold():
    config = RegistryConfig(accuracy_threshold=0.9, regression_tolerance=0.001)
    decision = gate(config, 0.9940, PRODUCTION, NO_DRIFT)
    assert not decision.passed
    assert "regresses from production version 3 (0.9960)" in decision.reasons[0]


@pytest.mark.parametrize(("blocks", "passes"), [(True, False), (False, True)])
def test_drift_blocks_only_when_configured(blocks: bool, passes: bool):
    decision = gate(RegistryConfig(drift_blocks=blocks), 0.9970, PRODUCTION, DRIFT)
    assert decision.passed is passes
    if not passes:
        assert decision.reasons == ["data drift (60% of columns: ink_fraction)"]


def test_every_failing_rule_is_named():
    decision = gate(RegistryConfig(), 0.5, PRODUCTION, DRIFT)
    assert len(decision.reasons) == 3


def test_rollbacks_walk_back_through_the_promotions():
    history = [
        {"version": 1, "action": "promote"},
        {"version": 2, "action": "promote"},
        {"version": 4, "action": "auto-approved"},
        {"version": 2, "action": "rollback"},
    ]
    assert production_stack(history) == [1, 2]
    assert production_stack([*history, {"version": 1, "action": "rollback"}]) == [1]
    assert production_stack([*history, {"version": 5, "action": "promote"}]) == [1, 2, 5]
