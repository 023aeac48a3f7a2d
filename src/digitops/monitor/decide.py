"""What the monitor decides from an observation, and why: pure rules, no side effects.

Two decisions per pass:
- **the model's**: `nothing`, `alert` (something is wrong, but a retrain cannot help yet: too
  few new labels, a cool-down, a challenger still in its rollout: one that gets traffic) or
  `retrain`;
- **the challenger's** (the `candidate` version, while it is not production): `wait` for enough
  labeled traffic, then `promote` (its live accuracy is no worse than the champion's, within
  `rollout_tolerance`) or `reject`.
Every rule that fired is named in `reasons`, with the figures behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from digitops.config import MonitorConfig
from digitops.monitor.observe import Observation

Action = Literal["nothing", "alert", "retrain"]
RolloutAction = Literal["none", "wait", "promote", "reject"]


@dataclass(frozen=True)
class Decision:
    action: Action
    reasons: list[str]


@dataclass(frozen=True)
class RolloutDecision:
    action: RolloutAction
    version: int | None
    reason: str


def decide(cfg: MonitorConfig, seen: Observation, last_retrain: float | None) -> Decision:
    """nothing / alert / retrain, from drift, live accuracy and new labels."""
    problems = []
    for drift in seen.drift:
        if drift.drifted:
            columns = ", ".join(drift.columns[:6]) + ("..." if len(drift.columns) > 6 else "")
            problems.append(
                f"{drift.kind} drift: {drift.share:.0%} of columns drifted over "
                f"{drift.compared} requests ({columns})"
            )
    production = seen.versions.production
    live = seen.accuracy_of(production) if production is not None else None
    if live is not None and live.labeled >= cfg.min_labels and live.accuracy < cfg.accuracy_floor:
        problems.append(
            f"live accuracy of production version {production}: {live.accuracy:.1%} on "
            f"{live.labeled} labeled requests (< {cfg.accuracy_floor:.0%})"
        )
    if not problems and seen.requests < cfg.min_requests:
        few = f"{seen.requests} requests in the window (< {cfg.min_requests}: drift not judged)"
        return Decision("nothing", [few])
    if not problems:
        return Decision("nothing", ["no drift, live accuracy within bounds"])
    if seen.versions.candidate not in (None, production) and seen.challenger_requests:
        blocked = f"version {seen.versions.candidate} is in its rollout; judge it first"
    elif seen.new_labels < cfg.retrain_labels:
        blocked = f"{seen.new_labels} new labels of {cfg.retrain_labels} needed to retrain"
    elif last_retrain is not None and seen.end - last_retrain < cfg.cooldown_hours * 3600:
        hours = (seen.end - last_retrain) / 3600
        blocked = (
            f"cool-down: the last retrain started {hours:.1f} h ago (< {cfg.cooldown_hours} h)"
        )
    else:
        return Decision(
            "retrain", [*problems, f"{seen.new_labels} new labels since the last training"]
        )
    return Decision("alert", [*problems, blocked])


def judge_challenger(cfg: MonitorConfig, seen: Observation) -> RolloutDecision:
    """wait / promote / reject the challenger, on live labeled traffic."""
    production, candidate = seen.versions.production, seen.versions.candidate
    if candidate is None or candidate == production:
        return RolloutDecision("none", None, "no challenger")
    mine = seen.accuracy_of(candidate)
    labeled = mine.labeled if mine is not None else 0
    agreement = seen.shadow_agreement.get(str(candidate))
    agrees = (
        f", agrees with production on {agreement:.0%} of shadowed requests"
        if agreement is not None
        else ""
    )
    if not seen.challenger_requests:
        return RolloutDecision(
            "wait", candidate, "no traffic: no service runs it as a challenger (serve --challenger)"
        )
    if mine is None or labeled < cfg.rollout_labels:
        return RolloutDecision(
            "wait", candidate, f"{labeled} of {cfg.rollout_labels} labeled requests{agrees}"
        )
    champion = seen.accuracy_of(production) if production is not None else None
    figures = f"version {candidate}: {mine.accuracy:.1%} on {labeled} labeled requests"
    if champion is None or champion.labeled == 0:
        return RolloutDecision(
            "promote", candidate, f"{figures}{agrees}; no labeled production traffic to compare"
        )
    against = f"production version {production}: {champion.accuracy:.1%} on {champion.labeled}"
    if mine.accuracy >= champion.accuracy - cfg.rollout_tolerance:
        return RolloutDecision("promote", candidate, f"{figures} >= {against}{agrees}")
    return RolloutDecision("reject", candidate, f"{figures} < {against}{agrees}")
