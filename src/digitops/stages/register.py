"""Stage `register`: a new model version in the MLflow Model Registry, behind a quality gate.

The ONNX model (with its signature, an input example and the model card) becomes a version of
the registered model, tagged with its lineage. The gate: test accuracy at or above the
threshold, no regression against `production` beyond the tolerance, and no blocking drift. A
version that passes gets the alias `candidate` (and `production` with `approval: auto`); one
that fails stays unaliased, and its `gate_reasons` tag says which rule stopped it.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digitops.config import Config, RegistryConfig
from digitops.errors import DataError
from digitops.fileio import read_json
from digitops.registry import CANDIDATE, PRODUCTION, Version, by_alias, client, regression
from digitops.stages.evaluate import METRICS, load_model_card

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateDecision:
    """Whether a version may become a candidate, and why not."""

    passed: bool
    reasons: list[str]


@dataclass(frozen=True)
class RegisterResult:
    """The registered version and what the gate decided."""

    model_name: str
    version: int
    gate: GateDecision
    aliases: list[str]
    production: int | None


def gate(
    cfg: RegistryConfig,
    accuracy: float,
    production: Version | None,
    drift: dict[str, Any] | None,
) -> GateDecision:
    """Apply the three rules; every rule that fails is named."""
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
    if drift is not None and drift["drifted"] and cfg.drift_blocks:
        columns = ", ".join(drift["drifted_columns"])
        reasons.append(f"data drift ({drift['drifted_share']:.0%} of columns: {columns})")
    return GateDecision(not reasons, reasons)


def run(
    config: Config,
    model_dir: Path,
    evaluation_dir: Path,
    drift_file: Path | None = None,
    pipeline_run: str = "",
) -> RegisterResult:
    """Register `model_dir` as a new version, gate it, and set the aliases it earned."""
    cfg = config.registry
    card = load_model_card(model_dir)
    metrics = _read(evaluation_dir / METRICS, "an evaluation", "digitops evaluate")
    drift = _read(drift_file, "a drift verdict", "digitops drift") if drift_file else None
    mlflow_client = client(config.tracking)
    production = by_alias(mlflow_client, cfg.model_name, PRODUCTION)
    decision = gate(cfg, float(metrics["accuracy"]), production, drift)

    number = _log_model(config, model_dir, card)
    tags = _lineage(card, metrics, drift, pipeline_run) | {
        "gate": "passed" if decision.passed else "failed",
        "gate_reasons": "; ".join(decision.reasons) or "all rules passed",
    }
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(cfg.model_name, str(number), key, value)
    if decision.passed:
        mlflow_client.set_registered_model_alias(cfg.model_name, CANDIDATE, str(number))
        if cfg.approval == "auto":
            from digitops.registry import set_production

            set_production(mlflow_client, cfg.model_name, number, "auto-approved")
    else:
        log.warning("version %s stopped by the gate: %s", number, "; ".join(decision.reasons))
    final = mlflow_client.get_model_version(cfg.model_name, str(number))
    now = by_alias(mlflow_client, cfg.model_name, PRODUCTION)
    return RegisterResult(
        cfg.model_name, number, decision, list(final.aliases), now.number if now else None
    )


def _log_model(config: Config, model_dir: Path, card: dict[str, Any]) -> int:
    """Log the ONNX model under its training run and register it; returns the version."""
    import mlflow
    import numpy as np
    import onnx
    from mlflow.models import infer_signature

    from digitops.stages.evaluate import predict_logits
    from digitops.tracking import start_run

    example = np.zeros((2, 28, 28), dtype=np.uint8)
    example[:, 8:20, 13:15] = 255  # two upright strokes: a "1"
    inputs = example[:, None].astype(np.float32) / 255.0
    signature = infer_signature(inputs, predict_logits(model_dir / "model.onnx", example, 2))
    with start_run(config.tracking, run_name="register", run_id=_known_run(config, card)):
        info = mlflow.onnx.log_model(
            onnx.load(str(model_dir / "model.onnx")),
            name="onnx-model",
            registered_model_name=config.registry.model_name,
            signature=signature,
            input_example=inputs,
            extra_files=[str(model_dir / "model.json")],
            pip_requirements=["onnxruntime", "numpy"],
            onnx_execution_providers=["CPUExecutionProvider"],
            save_as_external_data=False,  # one self-contained file: the model is small
        )
    return int(info.registered_model_version)


def _known_run(config: Config, card: dict[str, Any]) -> str | None:
    """The model's training run if this tracking store has it (else a new `register` run)."""
    from mlflow.exceptions import MlflowException

    run_id = card.get("mlflow_run_id")
    if not run_id:
        return None
    try:
        client(config.tracking).get_run(run_id)
    except MlflowException:
        log.warning("training run %s is not in this tracking store; logging anew", run_id)
        return None
    return str(run_id)


def _lineage(
    card: dict[str, Any],
    metrics: dict[str, Any],
    drift: dict[str, Any] | None,
    pipeline_run: str,
) -> dict[str, str]:
    return {
        "dataset_version": str(card["dataset"]["version"]),
        "test_accuracy": f"{metrics['accuracy']:.6f}",
        "test_macro_f1": f"{metrics['macro']['f1']:.6f}",
        "val_accuracy": f"{card['metrics']['val_accuracy']:.6f}",
        "parameters": str(card["parameters"]),
        "drift_verdict": "none" if drift is None else ("drift" if drift["drifted"] else "no drift"),
        "drifted_share": "" if drift is None else f"{drift['drifted_share']:.3f}",
        "source_commit": _source_commit(),
        "pipeline_run": pipeline_run,
        "mlflow_run_id": str(card.get("mlflow_run_id") or ""),
    }


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


def _read(path: Path, what: str, command: str) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: not found; it should hold {what} from `{command}`")
    try:
        data: dict[str, Any] = read_json(path)
    except ValueError:
        raise DataError(f"{path}: not valid JSON; run `{command}` again") from None
    return data
