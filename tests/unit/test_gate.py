"""The registration gate's rules and the production history replay, without a registry."""

from types import SimpleNamespace
from typing import Any

import pytest

from digitops.config import RegistryConfig
from digitops.contracts import Evaluation
from digitops.registry import Version, gate, production_stack

PRODUCTION = Version(3, ["production"], {"test_accuracy": "0.9960"})
NO_DRIFT = SimpleNamespace(drifted=False, drifted_share=0.0, drifted_columns=[])
DRIFT = SimpleNamespace(drifted=True, drifted_share=0.6, drifted_columns=["ink_fraction"])
NAMES = [str(d) for d in range(10)]


def evaluation(accuracy: float, **changes: Any) -> Evaluation:
    """A test-split evaluation of a good model: 1,000 digits per class, `accuracy` overall
    (recall alike in every class unless `recall` says otherwise), calibrated, behaving."""
    recall = {name: accuracy for name in NAMES} | changes.pop("recall", {})
    matrix = [[0] * 10 for _ in NAMES]
    for i, name in enumerate(NAMES):
        wrong = round(1000 * (1 - recall[name]))
        matrix[i][i] = 1000 - wrong
        matrix[i][(i + 1) % 10] += wrong  # errors land on the next digit: no known pair
    for (a, b), count in changes.pop("confused", {}).items():
        matrix[a][a] -= count
        matrix[a][b] += count
    behavior = {
        "rotation": {"kind": "invariance", "description": "rotated", "rate": 0.99, "images": 2},
        "blank": {"kind": "directional", "description": "blank", "rate": 0.0, "images": 2},
    }
    behavior |= changes.pop("behavior", {})
    fields = {
        "test_accuracy": accuracy,
        "test_macro_f1": accuracy,
        "test_misclassified": 0,
        "test_images": 10_000,
        "macro": {},
        "per_class": {
            name: {
                "precision": 1.0,
                "recall": matrix[i][i] / sum(matrix[i]),
                "f1": 1.0,
                "support": 1000,
            }
            for i, name in enumerate(NAMES)
        },
        "confusion_matrix": matrix,
        "calibration": {
            "temperature": 1.2,
            "ece_before": 0.01,
            "ece_after": changes.pop("ece", 0.004),
            "bins_before": [],
            "bins_after": [],
            "unsure": {"0.7": 0.005},
            "errors_caught": {"0.7": 10},
            "errors": 30,
        },
        "behavior": behavior,
        "model_dir": "m",
        "dataset_version": "v",
    }
    return Evaluation.model_validate(fields | changes)


def test_a_better_model_without_drift_passes():
    decision = gate(RegistryConfig(), evaluation(0.9970), PRODUCTION, NO_DRIFT)
    assert decision.passed and decision.reasons == []
    assert [rule.name for rule in decision.rules] == [
        "accuracy",
        "no-regression",
        "drift",
        "class-recall",
        "confusion-pairs",
        "calibration",
        "invariance/rotation",
        "directional/blank",
    ]


def test_the_first_model_passes_on_accuracy_alone():
    assert gate(RegistryConfig(quality_rules=False), evaluation(0.9960), None, None).passed


def test_accuracy_below_the_threshold_is_named():
    decision = gate(RegistryConfig(quality_rules=False), evaluation(0.9900), None, NO_DRIFT)
    assert not decision.passed
    assert decision.reasons == ["accuracy: test accuracy 0.9900 < threshold 0.995"]


def test_small_dip_within_tolerance_is_no_regression():
    config = RegistryConfig(regression_tolerance=0.001)
    assert gate(config, evaluation(0.9955), PRODUCTION, NO_DRIFT).passed


def test_regression_beyond_tolerance_is_refused_even_above_the_threshold():
    config = RegistryConfig(accuracy_threshold=0.9, regression_tolerance=0.001)
    decision = gate(config, evaluation(0.9940), PRODUCTION, NO_DRIFT)
    assert not decision.passed
    assert decision.reasons[0].startswith("no-regression:")
    assert "production version 3 (0.9960)" in decision.reasons[0]


@pytest.mark.parametrize(("blocks", "passes"), [(True, False), (False, True)])
def test_drift_blocks_only_when_configured(blocks: bool, passes: bool):
    decision = gate(RegistryConfig(drift_blocks=blocks), evaluation(0.9970), PRODUCTION, DRIFT)
    assert decision.passed is passes
    if not passes:
        assert decision.reasons == ["drift: data drift (60% of columns: ink_fraction)"]


def test_one_weak_class_fails_the_recall_floor_despite_the_average():
    weak = evaluation(0.9960, recall={"8": 0.95})
    decision = gate(RegistryConfig(accuracy_threshold=0.99), weak, None, None)
    assert decision.reasons == ["class-recall: recall below 0.98 for 8 (0.9500)"]


def test_a_class_without_test_digits_is_not_judged_and_is_named():
    found = evaluation(0.9970)
    found.per_class["3"] |= {"recall": 0.0, "support": 0}
    decision = gate(RegistryConfig(), found, None, None)
    assert decision.reasons == [
        "class-recall: every class at 0.98 or more (lowest: 0, 0.9970); no test digits for 3"
    ]


def test_a_known_confusion_pair_over_its_budget_is_named():
    confused = evaluation(0.9970, confused={(4, 9): 15, (9, 4): 10})  # 25 of 2,000: 1.25 %
    decision = gate(RegistryConfig(accuracy_threshold=0.99), confused, None, None)
    assert decision.reasons == [
        "confusion-pairs: 4↔9 1.25% of the pair's test digits confused > budget 1.00%"
    ]


def test_calibration_error_over_the_ceiling_is_named():
    decision = gate(RegistryConfig(), evaluation(0.9970, ece=0.05), None, None)
    assert decision.reasons == ["calibration: expected calibration error 0.0500 > ceiling 0.02"]


def test_behavioral_failures_are_named_per_test():
    bad = {
        "rotation": {"kind": "invariance", "description": "rotated", "rate": 0.9, "images": 2},
        "blank": {"kind": "directional", "description": "blank", "rate": 0.5, "images": 2},
    }
    decision = gate(RegistryConfig(), evaluation(0.9970, behavior=bad), None, None)
    assert decision.reasons == [
        "invariance/rotation: rotated: 90.0% of answers kept < floor 95%",
        "directional/blank: blank: 50.0% answered with high confidence > ceiling 5%",
    ]


def test_without_quality_rules_only_accuracy_regression_and_drift_count():
    bad = evaluation(0.9970, recall={"8": 0.5}, ece=0.5)
    assert gate(RegistryConfig(quality_rules=False), bad, PRODUCTION, NO_DRIFT).passed


def test_every_failing_rule_is_named():
    decision = gate(RegistryConfig(quality_rules=False), evaluation(0.5), PRODUCTION, DRIFT)
    assert [reason.split(":")[0] for reason in decision.reasons] == [
        "accuracy",
        "no-regression",
        "drift",
    ]


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


def test_the_int8_file_is_judged_by_the_same_rules_named_int8():
    good = evaluation(0.997)
    int8 = evaluation(0.990, ece=0.05).model_dump(include=set(Evaluation.model_fields) - {"int8"})
    extra = {"size_bytes": 27_000, "agreement": 0.99}
    both = Evaluation.model_validate(good.model_dump() | {"int8": int8 | extra})
    decision = gate(RegistryConfig(), both, None, None)
    names = [rule.name for rule in decision.rules]
    assert {"accuracy", "int8/accuracy", "int8/calibration", "int8/class-recall"} <= set(names)
    assert not decision.passed
    assert [reason.split(":")[0] for reason in decision.reasons] == [
        "int8/accuracy",
        "int8/calibration",
    ]
    assert gate(RegistryConfig(), good, None, None).passed  # older evaluations: no int8 rules
