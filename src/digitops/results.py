"""Typed stage results: each stage's numbers under one name, wherever they are shown.

A stage returns a frozen dataclass deriving from `StageResult`. Fields made with `metric()` are
its metrics: `metrics()` names them once, and the same names reach MLflow (`log_to_mlflow`),
the KFP UI (`log_to_kfp`) and the console (`lines`). No face re-lists a result's fields.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, Protocol


def metric(**kwargs: Any) -> Any:
    """A result field that is a metric (a number, or a mapping of names to numbers)."""
    return dataclasses.field(metadata={"metric": True}, **kwargs)


class _MetricSink(Protocol):
    path: str

    def log_metric(self, metric: str, value: float) -> None: ...


@dataclasses.dataclass(frozen=True)
class StageResult:
    """Base of every stage's result. `title` heads the console summary."""

    title: ClassVar[str] = "result"

    def metrics(self) -> dict[str, float]:
        """The metric fields: `name: value`; a mapping field `name` gives `key_name: value`."""
        out: dict[str, float] = {}
        for field in dataclasses.fields(self):
            if field.metadata.get("metric"):
                out.update(_flatten(field.name, getattr(self, field.name)))
        return out

    def heading(self) -> str:
        return self.title

    def lines(self) -> list[str]:
        """The console summary: a heading, then every field, metrics under their metric names."""
        rows = [self.heading()]
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.metadata.get("metric"):
                rows += [
                    f"  {name}: {show_value(v)}" for name, v in _flatten(field.name, value).items()
                ]
            else:
                rows.append(f"  {field.name}: {show_value(value)}")
        return rows


def _flatten(name: str, value: Any) -> dict[str, float]:
    if isinstance(value, dict):
        return {f"{key}_{name}": float(v) for key, v in value.items()}
    return {} if value is None else {name: float(value)}


def log_to_mlflow(result: StageResult, step: int | None = None) -> None:
    """The result's metrics on the active MLflow run."""
    import mlflow

    mlflow.log_metrics(result.metrics(), step=step)


def log_to_kfp(result: StageResult, sink: _MetricSink) -> None:
    """The result's metrics on a KFP `Output[Metrics]` artifact, and as JSON in its file: KFP's
    local cache takes an output with no file for a lost one, and runs the task again."""
    metrics = result.metrics()
    for name, value in metrics.items():
        sink.log_metric(name, value)
    write_artifact_file(sink.path, metrics)


def write_artifact_file(path: str, content: Any) -> None:
    """`content` as JSON at a KFP output artifact's path (a metrics artifact has none otherwise)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(content, indent=1, sort_keys=True, default=str))


def show_value(value: Any) -> str:
    """A value as the console shows it (floats to 4 places, whole numbers without decimals)."""
    if isinstance(value, float):
        return f"{value:.4f}" if not value.is_integer() else f"{value:.0f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {show_value(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "none"
    if isinstance(value, Path):
        return str(value)
    return "none" if value is None else str(value)
