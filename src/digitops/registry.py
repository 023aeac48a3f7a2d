"""The MLflow Model Registry as digitops uses it: aliases, the gate's tags, promotion history.

A registered model (default `digit-classifier`) has versions; the alias `candidate` marks the
newest version that passed the gate, `production` the one serving. Every change of `production`
is appended to the registered model's `production_history` tag, so `rollback` knows where to go.
Works against any tracking URI: the default SQLite file or an `mlflow server` over HTTP.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from digitops.config import RegistryConfig, TrackingConfig
from digitops.errors import DigitopsError

CANDIDATE = "candidate"
PRODUCTION = "production"
HISTORY_TAG = "production_history"
HISTORY_KEEP = 30  # entries kept in the tag (MLflow caps tag values at a few kB)


class RegistryError(DigitopsError):
    """A registry operation that cannot be done (unknown version, refused promotion...)."""


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
    return entries


def set_production(mlflow_client: Any, name: str, number: int, action: str) -> None:
    """Move the `production` alias to `number` and append the change to the history."""
    entries = history(mlflow_client, name)
    entries.append(
        {
            "version": number,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "by": _user(),
            "action": action,
        }
    )
    mlflow_client.set_registered_model_alias(name, PRODUCTION, str(number))
    mlflow_client.set_registered_model_tag(
        name, HISTORY_TAG, json.dumps(entries[-HISTORY_KEEP:], separators=(",", ":"))
    )


def promote(cfg: RegistryConfig, tracking: TrackingConfig, number: int) -> Version:
    """Give `production` to a version that passed the gate and is no worse than production."""
    mlflow_client = client(tracking)
    version = get_version(mlflow_client, cfg.model_name, number)
    if version.tags.get("gate") != "passed":
        reasons = version.tags.get("gate_reasons", "it was never gated")
        raise RegistryError(
            f"version {number} of '{cfg.model_name}' did not pass the gate ({reasons}); "
            "only gated versions can be promoted"
        )
    current = by_alias(mlflow_client, cfg.model_name, PRODUCTION)
    if current is not None and current.number == number:
        raise RegistryError(f"version {number} is already in production")
    if current is not None and regression(version, current, cfg.regression_tolerance):
        raise RegistryError(
            f"version {number} (test accuracy {version.accuracy:.4f}) is worse than production "
            f"version {current.number} ({current.accuracy:.4f}) beyond the tolerance "
            f"{cfg.regression_tolerance}; use `digitops rollback` to go back to an older version"
        )
    set_production(mlflow_client, cfg.model_name, number, "promote")
    return get_version(mlflow_client, cfg.model_name, number)


def rollback(cfg: RegistryConfig, tracking: TrackingConfig) -> tuple[int, int]:
    """Give `production` back to the version that held it before; returns (from, to)."""
    mlflow_client = client(tracking)
    current = by_alias(mlflow_client, cfg.model_name, PRODUCTION)
    if current is None:
        raise RegistryError(f"'{cfg.model_name}' has no production version to roll back")
    stack = production_stack(history(mlflow_client, cfg.model_name))
    if len(stack) < 2 or stack[-1] != current.number:
        raise RegistryError(
            f"version {current.number} has no earlier production version in the history of "
            f"'{cfg.model_name}'; there is nothing to roll back to"
        )
    set_production(mlflow_client, cfg.model_name, stack[-2], "rollback")
    return current.number, stack[-2]


def production_stack(entries: list[dict[str, Any]]) -> list[int]:
    """Replay the history: a promotion pushes a version, a rollback pops back to the one before.
    The last element is production; the one before it is where a rollback goes."""
    stack: list[int] = []
    for entry in entries:
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
class GateDecision:
    """Whether a version may become a candidate, and why not."""

    passed: bool
    reasons: list[str]


def gate(
    cfg: RegistryConfig,
    accuracy: float,
    production: Version | None,
    drift: DriftFinding | None,
) -> GateDecision:
    """The gate, decided here only: accuracy at or above the threshold, no regression against
    production beyond the tolerance, no blocking drift. Every rule that fails is named."""
    reasons = []
    if accuracy < cfg.accuracy_threshold:
        reasons.append(f"test accuracy {accuracy:.4f} < threshold {cfg.accuracy_threshold}")
    candidate = Version(0, [], {"test_accuracy": str(accuracy)})
    if production is not None and regression(candidate, production, cfg.regression_tolerance):
        reasons.append(
            f"test accuracy {accuracy:.4f} regresses from production version "
            f"{production.number} ({production.accuracy:.4f}) by more than "
            f"{cfg.regression_tolerance}"
        )
    if drift is not None and drift.drifted and cfg.drift_blocks:
        columns = ", ".join(drift.drifted_columns)
        reasons.append(f"data drift ({drift.drifted_share:.0%} of columns: {columns})")
    return GateDecision(not reasons, reasons)


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
