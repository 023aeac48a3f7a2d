"""Stage `register`: a new model version in the MLflow Model Registry, behind a quality gate.

The ONNX model (with its signature, an input example and the model card) becomes a version of
the registered model, tagged with its lineage. The gate (`digitops.registry.gate`): test
accuracy, no regression against `production` beyond the tolerance, no blocking drift, and the
quality rules (every class's recall, the known confusion pairs, calibration, behavioral tests).
A version that passes gets the alias `candidate` (and `production` with `approval: auto`); one
that fails stays unaliased, and its `gate_reasons` tag names each rule that stopped it. Either
way the version gets a model card (`model_card.md` / `.html`), logged with it in MLflow.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digitops.config import Config
from digitops.contracts import DriftVerdict, Evaluation, Registration
from digitops.fileio import check_replaceable
from digitops.model.artifact import (
    MODEL_CARD,
    MODEL_INT8,
    MODEL_ONNX,
    ModelCard,
    OnnxClassifier,
    load_card,
)
from digitops.registry import (
    CANDIDATE,
    PRODUCTION,
    alias_lock,
    by_alias,
    client,
    gate,
    set_production,
)
from digitops.results import StageResult
from digitops.stages import model_card

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisterResult(StageResult):
    """The registered version and what the gate decided."""

    model_name: str
    version: int
    gate_passed: bool
    gate_reasons: list[str]
    aliases: list[str]
    production: int | None
    card_dir: Path | None = None

    def heading(self) -> str:
        return f"registered {self.model_name} version {self.version}"

    @property
    def in_production(self) -> bool:
        """Whether this version passed and now holds `production` (approval was automatic)."""
        return self.gate_passed and self.production == self.version

    def registration(self) -> Registration:
        """The file `deploy` reads."""
        return Registration(model_name=self.model_name, version=self.version)


def run(
    config: Config,
    model_dir: Path,
    evaluation_dir: Path,
    drift_file: Path | None = None,
    pipeline_run: str = "",
    trigger: str = "",
    explanation_dir: Path | None = None,
    card_dir: Path | None = None,
    reuse_version: bool = False,
) -> RegisterResult:
    """Register `model_dir` as a new version, gate it, and set the aliases it earned.
    `trigger` says why the run started (the monitor's reasons); kept as the `trigger` tag. The
    model card goes to `card_dir` (default: a `model-card` directory beside the evaluation)
    and to MLflow, with `explain`'s attributions when `explanation_dir` has them. With
    `reuse_version` (the pipeline's register task), a model whose training run already has a
    version is not registered again: that version is gated anew. A pipeline run that stopped
    after registering and is run again with its tasks cached leaves one version, not two."""
    cfg = config.registry
    card = load_card(model_dir)
    evaluation = Evaluation.read(evaluation_dir)
    drift = DriftVerdict.read(drift_file) if drift_file else None
    card_dir = card_dir or evaluation_dir.parent / "model-card"
    check_replaceable(card_dir.resolve(), model_card.HTML)  # before anything is registered
    mlflow_client = client(config.tracking)
    run_id = _known_run(config, card)
    reused = _registered(mlflow_client, cfg.model_name, run_id) if reuse_version else None
    number = reused or _log_model(config, model_dir, run_id)
    lineage = _lineage(card, evaluation, drift, pipeline_run, trigger)
    for key, value in lineage.items():
        mlflow_client.set_model_version_tag(cfg.model_name, str(number), key, value)
    # The gate reads `production` under the alias lock, at the moment the aliases move: a
    # promotion that lands while this model was being logged is judged against, not lost.
    with alias_lock(mlflow_client, cfg.model_name):
        production = by_alias(mlflow_client, cfg.model_name, PRODUCTION)
        decision = gate(cfg, evaluation, production, drift)
        verdict = {
            "gate": "passed" if decision.passed else "failed",
            "gate_reasons": "; ".join(decision.reasons) or "all rules passed",
        }
        for key, value in verdict.items():
            mlflow_client.set_model_version_tag(cfg.model_name, str(number), key, value)
        if decision.passed:
            mlflow_client.set_registered_model_alias(cfg.model_name, CANDIDATE, str(number))
            if cfg.approval == "auto":
                set_production(mlflow_client, cfg.model_name, number, "auto-approved")
        elif reused:  # a new version holds no alias yet
            _withdraw_candidate(mlflow_client, cfg.model_name, number)
    if not decision.passed:
        log.warning("version %s stopped by the gate: %s", number, "; ".join(decision.reasons))
    model_card.write(
        model_card.CardInputs(
            cfg.model_name,
            number,
            card,
            evaluation,
            decision,
            lineage,
            drift,
            evaluation_dir,
            explanation_dir,
        ),
        card_dir,
    )
    final = mlflow_client.get_model_version(cfg.model_name, str(number))
    _log_card(mlflow_client, cfg.model_name, number, final.run_id, card_dir)
    now = by_alias(mlflow_client, cfg.model_name, PRODUCTION)
    return RegisterResult(
        cfg.model_name,
        number,
        decision.passed,
        decision.reasons,
        list(final.aliases),
        now.number if now else None,
        card_dir,
    )


def _log_card(mlflow_client: Any, name: str, number: int, run_id: str, card_dir: Path) -> None:
    """The model card in MLflow: in the run the version was logged from, under
    `model-card/v<N>` (the run's artifact view renders the HTML), and named by the version's
    `model_card` tag."""
    path = f"model-card/v{number}"
    mlflow_client.log_artifacts(run_id, str(card_dir), artifact_path=path)
    mlflow_client.set_model_version_tag(
        name, str(number), "model_card", f"runs:/{run_id}/{path}/{model_card.HTML}"
    )


def _log_model(config: Config, model_dir: Path, run_id: str | None) -> int:
    """Log the ONNX model under its training run `run_id` (None: a new `register` run) and
    register it; returns the version."""
    import mlflow
    import numpy as np
    import onnx
    from mlflow.models import infer_signature

    from digitops.model.artifact import as_input
    from digitops.tracking import start_run

    example = np.zeros((2, 28, 28), dtype=np.uint8)
    example[:, 8:20, 13:15] = 255  # two upright strokes: a "1"
    inputs = as_input(example)
    signature = infer_signature(inputs, OnnxClassifier.load(model_dir).logits(example))
    with start_run(config.tracking, run_name="register", run_id=run_id):
        info = mlflow.onnx.log_model(
            onnx.load(str(model_dir / MODEL_ONNX)),
            name="onnx-model",
            registered_model_name=config.registry.model_name,
            signature=signature,
            input_example=inputs,
            # The int8 file travels with the version, so `models:/` URIs serve it when asked.
            extra_files=[
                str(model_dir / name)
                for name in (MODEL_CARD, MODEL_INT8)
                if (model_dir / name).is_file()
            ],
            pip_requirements=["onnxruntime", "numpy"],
            onnx_execution_providers=["CPUExecutionProvider"],
            save_as_external_data=False,  # one self-contained file: the model is small
        )
    return int(info.registered_model_version)


def _withdraw_candidate(mlflow_client: Any, name: str, number: int) -> None:
    """A reused version that fails the gate now is no candidate (hold `alias_lock`). One that
    holds `production` keeps it: taking it out is `digitops rollback`'s, and is said."""
    aliases = set(mlflow_client.get_model_version(name, str(number)).aliases)
    if CANDIDATE in aliases:
        mlflow_client.delete_registered_model_alias(name, CANDIDATE)
    if PRODUCTION in aliases:
        log.warning("version %s is still in production: `digitops rollback` takes it out", number)


def _registered(mlflow_client: Any, name: str, run_id: str | None) -> int | None:
    """The newest version of `name` registered from training run `run_id`, if any."""
    if run_id is None:
        return None
    found = mlflow_client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if not found:
        return None
    number = max(int(version.version) for version in found)
    log.info("version %s already holds this model (run %s): gating it again", number, run_id)
    return number


def _known_run(config: Config, card: ModelCard) -> str | None:
    """The model's training run if this tracking store has it (else a new `register` run)."""
    from mlflow.exceptions import MlflowException

    run_id = card.mlflow_run_id
    if not run_id:
        return None
    try:
        client(config.tracking).get_run(run_id)
    except MlflowException:
        log.warning("training run %s is not in this tracking store; logging anew", run_id)
        return None
    return str(run_id)


def _lineage(
    card: ModelCard,
    evaluation: Evaluation,
    drift: DriftVerdict | None,
    pipeline_run: str,
    trigger: str,
) -> dict[str, str]:
    int8 = evaluation.int8
    return {
        "test_accuracy_int8": f"{int8.test_accuracy:.6f}" if int8 else "",
        "int8_bytes": str(int8.size_bytes) if int8 else "",
        "dataset_version": card.dataset.version,
        "production_data": _production_data(card),
        "test_accuracy": f"{evaluation.test_accuracy:.6f}",
        "test_macro_f1": f"{evaluation.test_macro_f1:.6f}",
        "val_accuracy": f"{card.metrics.val_accuracy:.6f}",
        "parameters": str(card.parameters),
        "drift_verdict": "none" if drift is None else ("drift" if drift.drifted else "no drift"),
        "drifted_share": "" if drift is None else f"{drift.drifted_share:.3f}",
        "source_commit": _source_commit(),
        "pipeline_run": pipeline_run,
        "trigger": trigger or "manual",
        "mlflow_run_id": card.mlflow_run_id or "",
    }


def _production_data(card: ModelCard) -> str:
    """What production data the version learned from, in one tag: the labeled requests of a
    store, named one by one in the training run's dataset/records.json."""
    production = card.dataset.production
    if not production:
        return "none"
    return (
        f"{production['images']} labeled requests from {production['store']} "
        f"(records.json sha256 {production['records_sha256'][:12]}, in the training run)"
    )


def _source_commit() -> str:
    """$DIGITOPS_SOURCE_COMMIT (set in images), else the checkout's HEAD, else 'unknown'."""
    if commit := os.environ.get("DIGITOPS_SOURCE_COMMIT"):
        return commit
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
