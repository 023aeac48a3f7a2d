"""One monitor pass: observe the window, judge the challenger, decide about the model, act,
and record why (console lines, `monitor.json` and `history.jsonl` in the output folder, an
MLflow run, the webhook).

The monitor only decides and records; the pipeline retrains, and the registry has the last
word on every alias move: a promotion the registry refuses (the gate, a regression) becomes a
rejection, with the registry's reason. A failure to observe (an unreadable store, a registry
that cannot be reached) is itself recorded as an alert, named in one line, and moves nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from digitops import registry
from digitops.config import Config
from digitops.errors import DigitopsError
from digitops.fileio import atomic_write_bytes
from digitops.monitor import alerts, retrain
from digitops.monitor.decide import Decision, RolloutDecision, decide, judge_challenger
from digitops.monitor.observe import Observation, Versions, observe
from digitops.tracking import tracking_uri

LATEST = "monitor.json"
HISTORY = "history.jsonl"
LOCK = "retrain.lock"
RETRAIN_TAG = "monitor_retrain"  # on the pass's MLflow run: 'started' when it started one
STARTED_AT_TAG = "monitor_retrain_at"  # when (epoch s; the run is logged after a local run)


@dataclass
class Pass:
    """What one pass saw, decided and did."""

    time: float
    decision: Decision
    rollout: RolloutDecision
    observation: Observation | None = None
    retrain: retrain.Retrain | None = None
    failures: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The console summary."""
        rows = [f"decision: {self.decision.action}"]
        rows += [f"  - {reason}" for reason in self.decision.reasons]
        if self.rollout.action != "none":
            rows.append(
                f"challenger {self.rollout.version}: {self.rollout.action} ({self.rollout.reason})"
            )
        seen = self.observation
        if seen is not None:
            rows.append(f"window: {seen.requests} requests, {seen.new_labels} new labels")
            for tally in seen.accuracy:
                rows.append(
                    f"  version {tally.model_version}: {tally.accuracy:.1%} live accuracy on "
                    f"{tally.labeled} labels"
                )
            for tally in seen.shadow_accuracy:
                rows.append(
                    f"  version {tally.model_version} (shadow): {tally.accuracy:.1%} on "
                    f"{tally.labeled} labels"
                )
        if self.retrain is not None:
            run = self.retrain
            rows.append(f"retrain: {run.state} {run.where} {run.registered}".rstrip())
        rows += [f"failed: {failure}" for failure in self.failures]
        return rows

    def record(self) -> dict[str, Any]:
        """The JSON record of the pass."""
        return json.loads(json.dumps(asdict(self), default=str))

    def payload(self) -> dict[str, Any]:
        """What the webhook gets: a `text` line (Slack) and the record."""
        text = f"digitops monitor: {self.decision.action} ({'; '.join(self.decision.reasons)})"
        if self.rollout.action in ("promote", "reject"):
            verdict = self.rollout
            text += f"; challenger {verdict.version}: {verdict.action} ({verdict.reason})"
        return {"text": text, **self.record()}


def run_pass(
    config: Config,
    store: str,
    reference: str,
    out: Path,
    pipeline_file: Path,
    root: Path,
    now: float | None = None,
) -> Pass:
    """One pass over the store at `store` (see the module docstring)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri(config.tracking))
    started = time.time() if now is None else now
    none = RolloutDecision("none", None, "not judged")
    try:
        versions = _versions(config)
        seen = observe(config, store, reference, versions, now=started)
    except (DigitopsError, MlflowException) as exc:
        failure = f"MLflow: {exc.message}" if isinstance(exc, MlflowException) else str(exc)
        done = Pass(
            started, Decision("alert", [f"cannot observe: {failure}"]), none, failures=[failure]
        )
        _finish(config, done, out)
        return done
    done = Pass(
        started,
        decide(config.monitor, seen, _last_retrain(config)),
        judge_challenger(config.monitor, seen),
        seen,
    )
    _act_on_challenger(config, done)
    if done.decision.action == "retrain":
        _retrain(config, done, store, out, pipeline_file, root)
    else:
        _finish(config, done, out)
    return done


def _act_on_challenger(config: Config, done: Pass) -> None:
    """Promote or reject the challenger through the registry. A refusal of the gate or the
    regression check rejects it; any other failure (a busy lock, an unreachable registry, a
    move made meanwhile) moves nothing and is named."""
    from mlflow.exceptions import MlflowException

    verdict = done.rollout
    if verdict.version is None or verdict.action not in ("promote", "reject"):
        return
    try:
        if verdict.action == "promote":
            try:
                registry.promote(
                    config.registry,
                    config.tracking,
                    verdict.version,
                    f"canary/shadow: {verdict.reason}",
                    "monitor-promote",
                )
                return
            except registry.PromotionRefused as exc:
                done.rollout = RolloutDecision(
                    "reject", verdict.version, f"the registry refuses it: {exc}"
                )
        registry.reject_candidate(
            config.registry, config.tracking, verdict.version, done.rollout.reason
        )
    except DigitopsError as exc:
        done.failures.append(f"{verdict.action} version {verdict.version}: {exc}")
    except MlflowException as exc:
        done.failures.append(f"{verdict.action} version {verdict.version}: {exc.message}")


def _retrain(
    config: Config, done: Pass, store: str, out: Path, pipeline_file: Path, root: Path
) -> None:
    """Start the retrain under the machine's lock, rechecking the cool-down there."""
    reasons = done.decision.reasons
    try:
        with retrain.one_at_a_time(out / LOCK):
            last = _last_retrain(config)
            hours = config.monitor.cooldown_hours
            if last is not None and done.time - last < hours * 3600:
                done.decision = Decision(
                    "alert",
                    [
                        *reasons,
                        f"cool-down: a retrain started {(done.time - last) / 3600:.1f} h ago "
                        f"(< {hours} h)",
                    ],
                )
                _finish(config, done, out)
                return
            local = not config.monitor.kfp_host
            if local:  # the run takes minutes: the cool-down and the webhook count from now
                _finish(config, done, out, retrain_started=True)
            try:
                done.retrain = retrain.start(config, store, reasons, pipeline_file, root)
            except retrain.RetrainBusy:
                raise  # a run on the KFP host: not a failure, an alert
            except DigitopsError as exc:
                done.failures.append(f"retrain: {exc}")
            # A KFP run counts once it was submitted (a host that is down starts no cool-down).
            _finish(config, done, out, retrain_started=not local and done.retrain is not None)
    except retrain.RetrainBusy as exc:
        done.decision = Decision("alert", [*reasons, str(exc)])
        _finish(config, done, out)


def _versions(config: Config) -> Versions:
    """Production, candidate and when the newest version was registered."""
    from mlflow.exceptions import MlflowException

    name = config.registry.model_name
    try:
        client = registry.client(config.tracking)
        production = registry.by_alias(client, name, registry.PRODUCTION)
        candidate = registry.by_alias(client, name, registry.CANDIDATE)
        found = client.search_model_versions(
            f"name='{name}'", max_results=1, order_by=["creation_timestamp DESC"]
        )
    except MlflowException as exc:
        raise DigitopsError(f"the registry cannot be read ({exc.message})") from None
    newest = max((int(v.creation_timestamp) for v in found), default=None)
    return Versions(
        production.number if production else None,
        candidate.number if candidate else None,
        newest / 1000 if newest is not None else None,
    )


def _last_retrain(config: Config) -> float | None:
    """When the last retrain started (from the monitor's MLflow runs: shared by every
    monitor that uses this tracking server, wherever it runs)."""
    from mlflow.exceptions import MlflowException

    client = registry.client(config.tracking)
    try:
        experiment = client.get_experiment_by_name(config.tracking.experiment)
        if experiment is None:
            return None
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.{RETRAIN_TAG} = 'started'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    except MlflowException:
        return None
    if not runs:
        return None
    return float(runs[0].data.tags.get(STARTED_AT_TAG, runs[0].info.start_time / 1000))


def _finish(config: Config, done: Pass, out: Path, retrain_started: bool = False) -> None:
    """Record the pass: the webhook and MLflow first, so that the JSON and the history name
    their failures too."""
    notify = done.decision.action != "nothing" or done.rollout.action in ("promote", "reject")
    if config.monitor.webhook and notify:
        failure = alerts.notify(
            config.monitor.webhook, done.payload(), config.monitor.webhook_timeout_s
        )
        if failure:
            done.failures.append(failure)
    if config.tracking.enabled:
        _track(config, done, retrain_started)
    record = done.record()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / LATEST, json.dumps(record, indent=2).encode())
    with (out / HISTORY).open("a") as history:
        history.write(json.dumps(record) + "\n")


def _track(config: Config, done: Pass, retrain_started: bool) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    from digitops.tracking import start_run

    tags = {
        "stage": "monitor",
        "decision": done.decision.action,
        "reasons": "; ".join(done.decision.reasons)[:5000],
        "rollout": f"{done.rollout.action} {done.rollout.version or ''}".strip(),
        "rollout_reason": done.rollout.reason[:5000],
    }
    if retrain_started:
        tags[RETRAIN_TAG] = "started"
        tags[STARTED_AT_TAG] = str(done.time)
    if done.retrain is not None:
        tags["retrain_run"] = done.retrain.where
        tags["retrain_state"] = done.retrain.state
    if done.failures:
        tags["failures"] = "; ".join(done.failures)[:5000]
    try:
        with start_run(config.tracking, run_name="monitor"):
            mlflow.set_tags(tags)
            seen = done.observation
            if seen is not None:
                mlflow.log_metrics({"requests": seen.requests, "new_labels": seen.new_labels})
                for tally in seen.accuracy:
                    mlflow.log_metrics(
                        {
                            f"live_accuracy_v{tally.model_version}": tally.accuracy,
                            f"labeled_v{tally.model_version}": tally.labeled,
                        }
                    )
                for drift in seen.drift:
                    mlflow.log_metric(f"{drift.kind}_drifted_share", drift.share)
            mlflow.log_dict(done.record(), "monitor.json")
    except MlflowException as exc:
        done.failures.append(f"MLflow: {exc.message}")
