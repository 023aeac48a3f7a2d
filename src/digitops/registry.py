"""The MLflow Model Registry as digitops uses it: aliases, the gate's tags, promotion history.

A registered model (default `digit-classifier`) has versions; the alias `candidate` marks the
newest version that passed the gate, `production` the one serving. Every change of `production`
is recorded as a tag of its own on the registered model (`production_history/<n>`), so
`rollback` knows where to go and no move is ever dropped from the record.

Alias moves are serialized across processes and machines by a lock the registry itself holds
(`alias_lock`): whoever moves an alias reads the state, rechecks the gate and writes the alias
and its history entry while no one else can. Works against any tracking URI: the default SQLite
file or an `mlflow server` over HTTP.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from digitops.config import RegistryConfig, TrackingConfig
from digitops.contracts import Evaluation, Quality
from digitops.errors import DigitopsError

CANDIDATE = "candidate"
PRODUCTION = "production"
HISTORY_TAG = "production_history"  # one JSON list (the format before per-move tags)
HISTORY_PREFIX = "production_history/"  # one tag per move: production_history/000001, ...
LOCK_SUFFIX = ".alias-lock"
LOCK_WAIT_S = 60.0  # how long a move waits for another to finish
LOCK_STALE_S = 300.0  # a lock older than this was left by a crashed process and is broken


class RegistryError(DigitopsError):
    """A registry operation that cannot be done (unknown version, refused promotion...)."""


class PromotionRefused(RegistryError):
    """The gate or the regression check refuses the version: it must not go to production."""


@dataclass(frozen=True)
class Version:
    """A model version as the gate and the CLI see it."""

    number: int
    aliases: list[str]
    tags: dict[str, str]

    @property
    def accuracy(self) -> float | None:
        value = self.tags.get("test_accuracy")
        return float(value) if value is not None else None


def client(tracking: TrackingConfig) -> Any:
    """An `MlflowClient` on the configured tracking (and registry) URI."""
    from mlflow import MlflowClient

    from digitops.tracking import quiet_mlflow, tracking_uri

    quiet_mlflow()
    uri = tracking_uri(tracking)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def get_version(mlflow_client: Any, name: str, number: int) -> Version:
    from mlflow.exceptions import MlflowException

    try:
        found = mlflow_client.get_model_version(name, str(number))
    except MlflowException:
        raise RegistryError(f"model '{name}' has no version {number}") from None
    return Version(int(found.version), list(found.aliases), dict(found.tags))


def by_alias(mlflow_client: Any, name: str, alias: str) -> Version | None:
    """The version holding `alias`, or None (also when the model is not registered yet)."""
    from mlflow.exceptions import MlflowException

    try:
        found = mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return Version(int(found.version), list(found.aliases), dict(found.tags))


def history(mlflow_client: Any, name: str) -> list[dict[str, Any]]:
    """Which version held `production`, from when, set by whom and how (oldest first)."""
    from mlflow.exceptions import MlflowException

    try:
        tags = mlflow_client.get_registered_model(name).tags
    except MlflowException:
        raise RegistryError(
            f"no registered model '{name}'; run `digitops register` first"
        ) from None
    entries: list[dict[str, Any]] = json.loads(tags.get(HISTORY_TAG, "[]"))
    moves = sorted(key for key in tags if key.startswith(HISTORY_PREFIX))
    return entries + [json.loads(tags[key]) for key in moves]


def set_production(
    mlflow_client: Any, name: str, number: int, action: str, reason: str = ""
) -> None:
    """Move the `production` alias to `number` and record the move (hold `alias_lock`)."""
    mlflow_client.set_registered_model_alias(name, PRODUCTION, str(number))
    _record(mlflow_client, name, number, action, reason)


def _record(mlflow_client: Any, name: str, number: int, action: str, reason: str) -> None:
    """Append one entry to the history of `name` (hold `alias_lock`)."""
    entry = {
        "version": number,
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
        "by": _user(),
        "action": action,
    }
    if reason:
        entry["reason"] = reason
    key = f"{HISTORY_PREFIX}{len(history(mlflow_client, name)) + 1:06d}"
    mlflow_client.set_registered_model_tag(name, key, json.dumps(entry, separators=(",", ":")))


@contextmanager
def alias_lock(mlflow_client: Any, name: str) -> Iterator[None]:
    """Hold the lock on the aliases of model `name` while the block runs.

    The lock is a registered model of its own (`<name>.alias-lock`): creating one is atomic in
    every MLflow store (its name is unique), so of two processes only one gets it, wherever they
    run. MLflow has no compare-and-set on aliases or tags, hence this. A lock older than
    `LOCK_STALE_S` was left by a process that died holding it, and is broken."""
    from mlflow.exceptions import MlflowException

    lock = f"{name}{LOCK_SUFFIX}"
    deadline = time.monotonic() + LOCK_WAIT_S
    pause = 0.05
    while True:
        try:
            mlflow_client.create_registered_model(
                lock,
                tags={"holder": _user(), "purpose": f"serializes alias moves of '{name}'"},
                description=f"Held while digitops moves an alias of '{name}'; deleted after.",
            )
            break
        except MlflowException as exc:
            # Held: "already exists". An MLflow server can also answer "does not exist" when
            # the holder released it between the insert that clashed and the lookup the server
            # makes for its message (seen in the two-process race test): held, then free.
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        held = _lock_age_s(mlflow_client, lock)
        if held is not None and held > LOCK_STALE_S:
            # Known gap: two waiters that find the same stale lock at the same moment may both
            # delete it, and the second may delete the first's new lock. It takes a crash while
            # holding the lock and then a race within one retry; MLflow offers nothing atomic
            # that would close it.
            _delete_quietly(mlflow_client, lock)
            continue
        if time.monotonic() > deadline:
            raise RegistryError(
                f"another alias move of '{name}' has held the registry lock for "
                f"{held or 0:.0f} s; try again, or delete the registered model '{lock}' if no "
                "digitops command is running"
            )
        time.sleep(pause)
        pause = min(pause * 2, 1.0)
    try:
        yield
    finally:
        _delete_quietly(mlflow_client, lock)


def _lock_age_s(mlflow_client: Any, lock: str) -> float | None:
    from mlflow.exceptions import MlflowException

    try:
        created = mlflow_client.get_registered_model(lock).creation_timestamp
    except MlflowException:
        return None  # released meanwhile
    return time.time() - created / 1000


def _delete_quietly(mlflow_client: Any, lock: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # already gone
        mlflow_client.delete_registered_model(lock)


def default_model(cfg: RegistryConfig, tracking: TrackingConfig) -> tuple[str, int] | None:
    """What a command serves when no model is named: the registry's `production` version, else
    its `candidate`, as (alias URI, version); None when the store holds neither."""
    from digitops.tracking import tracking_uri

    uri = tracking_uri(tracking)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None  # no store yet (and looking would create an empty one)
    mlflow_client = client(tracking)
    for alias in (PRODUCTION, CANDIDATE):
        if (version := by_alias(mlflow_client, cfg.model_name, alias)) is not None:
            return f"models:/{cfg.model_name}@{alias}", version.number
    return None


def promote(
    cfg: RegistryConfig,
    tracking: TrackingConfig,
    number: int,
    reason: str = "",
    action: str = "promote",
) -> Version:
    """Give `production` to a version that passed the gate and is no worse than production;
    both checked under the lock, at the moment the alias moves. `reason` goes into the history
    (the monitor's promotions say which live figures earned it)."""
    mlflow_client = client(tracking)
    with alias_lock(mlflow_client, cfg.model_name):
        version = get_version(mlflow_client, cfg.model_name, number)
        if version.tags.get("gate") != "passed":
            reasons = version.tags.get("gate_reasons", "it was never gated")
            raise PromotionRefused(
                f"version {number} of '{cfg.model_name}' did not pass the gate ({reasons}); "
                "only gated versions can be promoted"
            )
        current = by_alias(mlflow_client, cfg.model_name, PRODUCTION)
        if current is not None and current.number == number:
            raise RegistryError(f"version {number} is already in production")
        if current is not None and regression(version, current, cfg.regression_tolerance):
            raise PromotionRefused(
                f"version {number} (test accuracy {version.accuracy:.4f}) is worse than "
                f"production version {current.number} ({current.accuracy:.4f}) beyond the "
                f"tolerance {cfg.regression_tolerance}; use `digitops rollback` to go back to "
                "an older version"
            )
        set_production(mlflow_client, cfg.model_name, number, action, reason)
    return get_version(mlflow_client, cfg.model_name, number)


REJECTED = "reject"  # the history action of a challenger taken out of its rollout


def reject_candidate(
    cfg: RegistryConfig, tracking: TrackingConfig, number: int, reason: str
) -> bool:
    """Take version `number` out of its rollout: the `candidate` alias leaves it (services stop
    sending it traffic), the version is tagged `rollout=rejected` with `reason`, and the
    history records the move. False when `number` no longer holds `candidate` (nothing moves)."""
    mlflow_client = client(tracking)
    with alias_lock(mlflow_client, cfg.model_name):
        current = by_alias(mlflow_client, cfg.model_name, CANDIDATE)
        if current is None or current.number != number:
            return False
        mlflow_client.delete_registered_model_alias(cfg.model_name, CANDIDATE)
        mlflow_client.set_model_version_tag(cfg.model_name, str(number), "rollout", "rejected")
        mlflow_client.set_model_version_tag(cfg.model_name, str(number), "rollout_reason", reason)
        _record(mlflow_client, cfg.model_name, number, REJECTED, reason)
    return True


def rollback(cfg: RegistryConfig, tracking: TrackingConfig, reason: str = "") -> tuple[int, int]:
    """Give `production` back to the version that held it before; returns (from, to)."""
    mlflow_client = client(tracking)
    with alias_lock(mlflow_client, cfg.model_name):
        current = by_alias(mlflow_client, cfg.model_name, PRODUCTION)
        if current is None:
            raise RegistryError(f"'{cfg.model_name}' has no production version to roll back")
        stack = production_stack(history(mlflow_client, cfg.model_name))
        if len(stack) < 2 or stack[-1] != current.number:
            raise RegistryError(
                f"version {current.number} has no earlier production version in the history "
                f"of '{cfg.model_name}'; there is nothing to roll back to"
            )
        set_production(mlflow_client, cfg.model_name, stack[-2], "rollback", reason)
        # A version rolled back out of production is no challenger either: left as the
        # candidate, a monitor would promote it again on the labels it earned in production.
        candidate = by_alias(mlflow_client, cfg.model_name, CANDIDATE)
        if candidate is not None and candidate.number == current.number:
            mlflow_client.delete_registered_model_alias(cfg.model_name, CANDIDATE)
    return current.number, stack[-2]


def production_stack(entries: list[dict[str, Any]]) -> list[int]:
    """Replay the history: a promotion pushes a version, a rollback pops back to the one before.
    The last element is production; the one before it is where a rollback goes."""
    stack: list[int] = []
    for entry in entries:
        if entry["action"] == REJECTED:  # a challenger never held production
            continue
        if entry["action"] == "rollback" and stack:
            stack.pop()
        if not stack or stack[-1] != entry["version"]:
            stack.append(entry["version"])
    return stack


class DriftFinding(Protocol):
    """What the gate reads of a drift verdict (`digitops.contracts.DriftVerdict`)."""

    @property
    def drifted(self) -> bool: ...
    @property
    def drifted_share(self) -> float: ...
    @property
    def drifted_columns(self) -> list[str]: ...


@dataclass(frozen=True)
class Rule:
    """One gate rule as it was decided: its name, whether it passed, and the figures."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateDecision:
    """Whether a version may become a candidate: every rule, and the failures as reasons."""

    rules: list[Rule]

    @property
    def passed(self) -> bool:
        return all(rule.passed for rule in self.rules)

    @property
    def reasons(self) -> list[str]:
        return [f"{rule.name}: {rule.detail}" for rule in self.rules if not rule.passed]


def gate(
    cfg: RegistryConfig,
    evaluation: Evaluation,
    production: Version | None,
    drift: DriftFinding | None,
) -> GateDecision:
    """The gate, decided here only. Accuracy at or above the threshold, no regression against
    production beyond the tolerance, no blocking drift; with `quality_rules`, also every class's
    recall, the known confusion pairs, calibration and the behavioral tests (`evaluate`'s).
    Every rule is named, passed or not."""
    accuracy = evaluation.test_accuracy
    rules = [_accuracy_rule(cfg, accuracy)]
    if production is not None:
        candidate = Version(0, [], {"test_accuracy": str(accuracy)})
        worse = regression(candidate, production, cfg.regression_tolerance)
        rules.append(
            Rule(
                "no-regression",
                not worse,
                f"test accuracy {accuracy:.4f} "
                + ("regresses from" if worse else "within tolerance of")
                + f" production version {production.number} ({production.accuracy or 0:.4f})"
                + (f" by more than {cfg.regression_tolerance}" if worse else ""),
            )
        )
    if drift is not None:
        blocked = drift.drifted and cfg.drift_blocks
        columns = ", ".join(drift.drifted_columns) or "none"
        rules.append(
            Rule(
                "drift",
                not blocked,
                f"{'data drift' if drift.drifted else 'no drift'} "
                f"({drift.drifted_share:.0%} of columns: {columns})"
                + ("" if cfg.drift_blocks else "; drift does not block"),
            )
        )
    if cfg.quality_rules:
        rules += _quality_rules(cfg, evaluation)
    if evaluation.int8 is not None:  # served when asked for: judged as any version is
        int8 = [_accuracy_rule(cfg, evaluation.int8.test_accuracy)]
        int8 += _quality_rules(cfg, evaluation.int8) if cfg.quality_rules else []
        rules += [Rule(f"int8/{rule.name}", rule.passed, rule.detail) for rule in int8]
    return GateDecision(rules)


def _accuracy_rule(cfg: RegistryConfig, accuracy: float) -> Rule:
    return Rule(
        "accuracy",
        accuracy >= cfg.accuracy_threshold,
        f"test accuracy {accuracy:.4f} {_cmp(accuracy >= cfg.accuracy_threshold)} "
        f"threshold {cfg.accuracy_threshold}",
    )


def _quality_rules(cfg: RegistryConfig, evaluation: Quality) -> list[Rule]:
    """The rules beyond accuracy: per class, the confusion pairs, calibration, behavior."""
    recall = {n: row["recall"] for n, row in evaluation.per_class.items() if row["support"]}
    untested = [n for n, row in evaluation.per_class.items() if not row["support"]]
    low = {name: r for name, r in recall.items() if r < cfg.class_recall_floor}
    worst = min(recall, key=lambda name: recall[name], default=None)
    if worst is None:
        detail = "no class has test digits"
    elif low:
        detail = f"recall below {cfg.class_recall_floor} for " + ", ".join(
            f"{name} ({r:.4f})" for name, r in low.items()
        )
    else:
        detail = f"every class at {cfg.class_recall_floor} or more (lowest: {worst}, "
        detail += f"{recall[worst]:.4f})"
    if untested:  # a recall of nothing is no measurement: the class is not judged, and said so
        detail += f"; no test digits for {', '.join(untested)}"
    rules = [Rule("class-recall", not low and not untested, detail)]
    names = list(evaluation.per_class)
    matrix = evaluation.confusion_matrix
    shares = {}
    for a, b in cfg.confusion_pairs:
        if a in names and b in names:
            i, j = names.index(a), names.index(b)
            digits = sum(matrix[i]) + sum(matrix[j])
            shares[f"{a}↔{b}"] = (matrix[i][j] + matrix[j][i]) / max(digits, 1)
    over = {pair: share for pair, share in shares.items() if share > cfg.confusion_budget}
    rules.append(
        Rule(
            "confusion-pairs",
            not over,
            ", ".join(f"{pair} {share:.2%}" for pair, share in (over or shares).items())
            + f" of the pair's test digits confused {_cmp(not over, '<=', '>')} budget "
            f"{cfg.confusion_budget:.2%}",
        )
    )
    ece = evaluation.calibration["ece_after"]
    rules.append(
        Rule(
            "calibration",
            ece <= cfg.ece_ceiling,
            f"expected calibration error {ece:.4f} {_cmp(ece <= cfg.ece_ceiling, '<=', '>')} "
            f"ceiling {cfg.ece_ceiling}",
        )
    )
    for name, test in evaluation.behavior.items():
        rate = test["rate"]
        if test["kind"] == "invariance":
            ok = rate >= cfg.invariance_floor
            detail = f"{rate:.1%} of answers kept {_cmp(ok)} floor {cfg.invariance_floor:.0%}"
        else:
            ok = rate <= cfg.directional_ceiling
            detail = (
                f"{rate:.1%} answered with high confidence {_cmp(ok, '<=', '>')} ceiling "
                f"{cfg.directional_ceiling:.0%}"
            )
        rules.append(Rule(f"{test['kind']}/{name}", ok, f"{test['description']}: {detail}"))
    return rules


def _cmp(ok: bool, good: str = ">=", bad: str = "<") -> str:
    return good if ok else bad


def regression(version: Version, production: Version, tolerance: float) -> bool:
    """Whether `version` is less accurate than `production` by more than `tolerance`."""
    if version.accuracy is None or production.accuracy is None:
        return False
    return version.accuracy < production.accuracy - tolerance


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
