"""Configuration: the pydantic models below are the schema and the only home of the defaults.

`configs/*.yaml` override what users are expected to change; `--set section.key=value` overrides
any single value from the command line. Unknown keys are errors that name the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from digitops.errors import ConfigError


class Section(BaseModel):
    """Base of every config section: unknown keys are rejected, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PrepareConfig(Section):
    """Where the data comes from and how it is split."""

    source: str = Field("mnist", description="'mnist', an IDX directory, image folder or CSV file")
    test_source: str | None = Field(None, description="separate test data (same kinds as source)")
    label_column: str = Field("label", description="label column of a CSV source")
    classes: list[str] | None = Field(None, description="expected class names; others are errors")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of the training pool for val")
    test_fraction: float = Field(0.15, gt=0, lt=1, description="test share when no test split")
    limit: int | None = Field(None, gt=0, description="cap on training-pool and test images")
    seed: int = 0


class AugmentConfig(Section):
    """Albumentations training-time augmentation (never applied to val/test)."""

    enabled: bool = True
    p: float = Field(0.9, ge=0, le=1, description="probability of the affine transform")
    rotate: float = Field(12.0, ge=0, le=180, description="max rotation, degrees")
    shift: float = Field(0.1, ge=0, le=0.5, description="max translation, fraction of size")
    scale: float = Field(0.1, ge=0, lt=1, description="max zoom in/out, fraction")
    shear: float = Field(5.0, ge=0, le=45, description="max shear, degrees")
    erase_p: float = Field(0.0, ge=0, le=1, description="probability of erasing a small patch")


class ModelConfig(Section):
    """The fully-convolutional CNN."""

    width: int = Field(8, ge=1, le=64, description="channels of the first block")
    dropout: float = Field(0.0, ge=0, lt=1)


class TrainConfig(Section):
    """Optimisation: AdamW with a one-cycle schedule, early stopping on val accuracy."""

    epochs: int = Field(15, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.01, gt=0, description="peak learning rate of the one-cycle schedule")
    weight_decay: float = Field(1e-4, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    patience: int = Field(5, ge=1, description="epochs without val improvement before stopping")
    seed: int = 42
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores)")
    progress: bool = True


class EvaluateConfig(Section):
    """Test-set evaluation."""

    batch_size: int = Field(1000, ge=1)
    max_misclassified: int = Field(64, ge=0, description="digits shown in the error grid")


class TrackingConfig(Section):
    """MLflow tracking. The URI defaults to $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."""

    enabled: bool = True
    uri: str | None = None
    experiment: str = "digitops"


class Config(Section):
    """The whole configuration, one section per stage."""

    prepare: PrepareConfig = PrepareConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tracking: TrackingConfig = TrackingConfig()


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build the config from defaults, an optional YAML file and `key=value` overrides."""
    raw: dict[str, Any] = _read_yaml(path) if path is not None else {}
    for item in overrides or []:
        _apply_override(raw, item)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of sections")
    return data


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.epochs=3")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        node[parts[-1]] = text


def _describe(exc: ValidationError, path: Path | None) -> str:
    where = f"{path}: " if path else ""
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}'")
        else:
            problems.append(f"'{key}': {err['msg']}")
    return f"{where}invalid config: " + "; ".join(problems)
