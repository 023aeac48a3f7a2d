"""The monitor's rules: what each observation decides, and the reasons it gives."""

from digitops.config import MonitorConfig
from digitops.monitor.decide import decide, judge_challenger
from digitops.monitor.observe import Drift, Observation, Versions
from digitops.store.reader import LiveAccuracy

CFG = MonitorConfig(min_requests=200, min_labels=50, retrain_labels=100, rollout_labels=50)
NOW = 1_000_000.0


def seen(
    requests: int = 500,
    drifted: bool = False,
    accuracy: tuple[int, int] | None = None,
    new_labels: int = 0,
    candidate: int | None = None,
    canary: tuple[int, int] | None = None,
    shadow: tuple[int, int] | None = None,
    challenger_requests: int = 300,
) -> Observation:
    tests = [
        Drift("descriptors", drifted, 0.8 if drifted else 0.1, ["ink"] if drifted else [], 500)
    ]
    tallies = [LiveAccuracy("1", *accuracy)] if accuracy else []
    if canary:
        tallies.append(LiveAccuracy("2", *canary))
    return Observation(
        start=NOW - 86400,
        end=NOW,
        requests=requests,
        versions=Versions(1, candidate, NOW - 7200),
        drift=tests if requests >= 200 else [],
        accuracy=tallies,
        shadow_accuracy=[LiveAccuracy("2", *shadow)] if shadow else [],
        shadow_agreement={"2": 0.9} if shadow else {},
        new_labels=new_labels,
        challenger_requests=challenger_requests if candidate else 0,
    )


def test_calm_traffic_decides_nothing():
    decision = decide(CFG, seen(accuracy=(98, 100), new_labels=500), None)
    assert decision.action == "nothing"


def test_too_few_requests_are_not_judged_for_drift():
    decision = decide(CFG, seen(requests=20), None)
    assert decision.action == "nothing"
    assert "20 requests in the window" in decision.reasons[0]


def test_drift_without_labels_alerts_and_says_what_it_waits_for():
    decision = decide(CFG, seen(drifted=True, new_labels=30), None)
    assert decision.action == "alert"
    assert decision.reasons[0].startswith("descriptors drift: 80% of columns")
    assert decision.reasons[-1] == "30 new labels of 100 needed to retrain"


def test_drift_with_enough_labels_retrains():
    decision = decide(CFG, seen(drifted=True, new_labels=150), None)
    assert decision.action == "retrain"
    assert decision.reasons[-1] == "150 new labels since the last training"


def test_low_live_accuracy_alone_retrains():
    decision = decide(CFG, seen(accuracy=(80, 100), new_labels=120), None)
    assert decision.action == "retrain"
    assert "live accuracy of production version 1: 80.0% on 100" in decision.reasons[0]


def test_low_accuracy_on_too_few_labels_is_not_a_finding():
    assert decide(CFG, seen(accuracy=(10, 20), new_labels=120), None).action == "nothing"


def test_a_cool_down_turns_a_retrain_into_an_alert():
    decision = decide(CFG, seen(drifted=True, new_labels=150), last_retrain=NOW - 3600)
    assert decision.action == "alert"
    assert decision.reasons[-1].startswith("cool-down: the last retrain started 1.0 h ago")
    assert decide(CFG, seen(drifted=True, new_labels=150), NOW - 7 * 3600).action == "retrain"


def test_no_retrain_while_a_challenger_is_in_its_rollout():
    decision = decide(CFG, seen(drifted=True, new_labels=150, candidate=2), None)
    assert decision.action == "alert"
    assert "version 2 is in its rollout" in decision.reasons[-1]


def test_no_challenger_means_no_rollout_decision():
    assert judge_challenger(CFG, seen()).action == "none"
    assert judge_challenger(CFG, seen(candidate=1)).action == "none"  # it is production


def test_a_challenger_waits_for_enough_labeled_traffic():
    verdict = judge_challenger(CFG, seen(candidate=2, accuracy=(90, 100), canary=(40, 40)))
    assert (verdict.action, verdict.version) == ("wait", 2)
    assert verdict.reason == "40 of 50 labeled requests"


def test_a_better_canary_is_promoted_and_a_worse_one_rejected():
    better = judge_challenger(CFG, seen(candidate=2, accuracy=(85, 100), canary=(58, 60)))
    assert better.action == "promote"
    assert better.reason == (
        "version 2: 96.7% on 60 labeled requests >= production version 1: 85.0% on 100"
    )
    worse = judge_challenger(CFG, seen(candidate=2, accuracy=(97, 100), canary=(50, 60)))
    assert worse.action == "reject" and " < production version 1" in worse.reason


def test_the_tolerance_lets_a_slightly_worse_challenger_through():
    cfg = CFG.model_copy(update={"rollout_tolerance": 0.05})
    assert judge_challenger(cfg, seen(candidate=2, accuracy=(97, 100), canary=(56, 60))).action == (
        "promote"
    )


def test_shadow_predictions_count_as_the_challengers_labeled_traffic():
    verdict = judge_challenger(CFG, seen(candidate=2, accuracy=(80, 100), shadow=(95, 100)))
    assert verdict.action == "promote"
    assert "agrees with production on 90% of shadowed requests" in verdict.reason


def test_a_candidate_no_service_runs_neither_waits_forever_nor_blocks_retraining():
    idle = seen(drifted=True, new_labels=150, candidate=2, challenger_requests=0)
    verdict = judge_challenger(CFG, idle)
    assert verdict.action == "wait" and verdict.reason.startswith("no traffic")
    assert decide(CFG, idle, None).action == "retrain"
