"""Configuration: the pydantic models below are the schema and the only home of the defaults.

`configs/*.yaml` override what users are expected to change; `--set section.key=value` overrides
any single value from the command line. Unknown keys are errors that name the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from digitops.errors import ConfigError


class Section(BaseModel):
    """Base of every config section: unknown keys are rejected, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PrepareConfig(Section):
    """Where the data comes from and how it is split."""

    source: str = Field(
        "mnist",
        description="'mnist', an IDX directory, image folder, CSV file, or a request store "
        "(its directory or s3://bucket/prefix: the labeled production images)",
    )
    test_source: str | None = Field(None, description="separate test data (same kinds as source)")
    label_column: str = Field("label", description="label column of a CSV source")
    classes: list[str] | None = Field(None, description="expected class names; others are errors")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of the training pool for val")
    test_fraction: float = Field(0.15, gt=0, lt=1, description="test share when no test split")
    limit: int = Field(0, ge=0, description="cap on training-pool and test images; 0 = all")
    mnist_ratio: float = Field(
        0.0,
        ge=0,
        description="with a request-store source: MNIST images added per production image",
    )
    seed: int = 42

    @field_validator("limit", mode="before")
    @classmethod
    def _no_limit(cls, value: Any) -> Any:
        return 0 if value is None else value  # `--set prepare.limit=` / `limit: null`: all


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
    outlier_exposure: float = Field(
        0.2, ge=0, description="weight of the loss that keeps non-digits unsure; 0: off"
    )
    patience: int = Field(5, ge=1, description="epochs without val improvement before stopping")
    seed: int = 42
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores)")
    progress: bool = True


class SearchDim(Section):
    """One dimension of the search space: a range (`low`..`high`) or a list of `values`."""

    kind: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _complete(self) -> SearchDim:
        if self.kind == "choice":
            if not self.values:
                raise ValueError("a 'choice' dimension needs a non-empty 'values' list")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a '{self.kind}' dimension needs 'low' < 'high'")
        elif self.kind == "loguniform" and self.low <= 0:
            raise ValueError("a 'loguniform' dimension needs 'low' > 0")
        return self


def _default_space() -> dict[str, SearchDim]:
    return {
        "train.lr": SearchDim(kind="loguniform", low=2e-3, high=3e-2),
        "train.weight_decay": SearchDim(kind="loguniform", low=1e-5, high=1e-2),
        "train.batch_size": SearchDim(kind="choice", values=[64, 128, 256]),
        "model.width": SearchDim(kind="choice", values=[6, 7, 8]),  # 11.5k, 15.6k, 20.2k params
        "model.dropout": SearchDim(kind="uniform", low=0.0, high=0.3),
        "augment.rotate": SearchDim(kind="uniform", low=0.0, high=20.0),
        "augment.shift": SearchDim(kind="uniform", low=0.0, high=0.15),
    }


class TuneConfig(Section):
    """Ray Tune search: Optuna TPE proposes, ASHA stops weak trials early.

    Each trial is a Lightning run on a subset of the training split for at most `epochs` epochs;
    the search ends after `trials` trials or `time_budget_s` seconds, whichever comes first.
    Every model the space can propose must fit `max_parameters` (checked before a trial runs),
    and the best trial is the fastest of those within `accuracy_tolerance` of the top one.
    """

    trials: int = Field(12, ge=0, description="number of trials; 0 skips the search")
    time_budget_s: float = Field(120.0, gt=0, description="wall-clock budget of the search")
    epochs: int = Field(4, ge=1, description="epochs of a trial that ASHA never stops")
    grace_epochs: int = Field(1, ge=1, description="epochs every trial gets before ASHA judges")
    reduction_factor: int = Field(2, ge=2, description="ASHA keeps 1/reduction_factor per rung")
    train_images: int | None = Field(12000, gt=0, description="training images per trial")
    cpus_per_trial: int = Field(1, ge=1)
    baseline: bool = Field(True, description="evaluate the configured values as the first trial")
    start_points: list[dict[str, Any]] = Field(
        default_factory=list, description="further points evaluated before the sampler's own"
    )
    space: dict[str, SearchDim] = Field(default_factory=_default_space)
    max_parameters: int | None = Field(
        25_000, gt=0, description="no trial's model may have more parameters; None: no bound"
    )
    accuracy_tolerance: float = Field(
        0.0005, ge=0, le=1, description="the fastest trial this close to the top val accuracy wins"
    )
    ray_address: str = Field(
        "", description="Ray cluster, e.g. ray://head:10001 (empty: $RAY_ADDRESS, else in-process)"
    )

    @field_validator("ray_address", mode="before")
    @classmethod
    def _no_address(cls, value: Any) -> Any:
        return "" if value is None else value  # `--set tune.ray_address=` / `null`: none

    seed: int = 42


class EvaluateConfig(Section):
    """Test-set evaluation."""

    batch_size: int = Field(1000, ge=1)
    max_misclassified: int = Field(64, ge=0, description="digits shown in the error grid")
    behavior_images: int = Field(1000, ge=10, description="test digits each behavioral test uses")
    behavior_rotate: float = Field(10.0, ge=0, le=45, description="invariance: rotation, degrees")
    behavior_shift_px: int = Field(2, ge=0, le=8, description="invariance: shift, pixels")
    behavior_stroke_px: int = Field(2, ge=1, le=4, description="invariance: dilation/erosion size")
    behavior_contrast: float = Field(0.5, ge=0, lt=1, description="invariance: ink contrast cut")
    high_confidence: float = Field(
        0.9, gt=0, le=1, description="directional: a confidence this high on a non-digit fails"
    )
    seed: int = 0


class ExplainConfig(Section):
    """Captum attributions of the trained model and their faithfulness (deletion curves)."""

    per_class: int = Field(2, ge=0, description="correctly classified test digits per class shown")
    max_misclassified: int = Field(8, ge=0, description="misclassified test digits shown")
    faithfulness_images: int = Field(500, ge=1, description="test digits for deletion curves")
    deletion_max: float = Field(0.5, ge=0.1, le=1, description="largest share of pixels removed")
    deletion_steps: int = Field(10, ge=2, description="points on the deletion curve after 0")
    ig_steps: int = Field(32, ge=2, description="Integrated Gradients path steps")
    occlusion_window: int = Field(4, ge=1, description="occlusion patch side, pixels")
    occlusion_stride: int = Field(2, ge=1)
    seed: int = 0


class DriftConfig(Section):
    """Evidently data drift between the training data and new data, over image descriptors.

    Distance tests (not p-values) so the verdict does not flip with sample size: Wasserstein
    distance in reference standard deviations for numbers, Jensen-Shannon for the predicted class.
    """

    # Evidently's distance tests only: a column drifts when its distance reaches the threshold
    # (p-value tests read the other way round and would invert the verdict).
    num_method: Literal["wasserstein", "ed", "hellinger", "jensenshannon", "kl_div", "psi"] = (
        "wasserstein"
    )
    num_threshold: float = Field(0.1, gt=0, description="a column drifts at this distance or more")
    cat_method: Literal["jensenshannon", "hellinger", "kl_div", "psi"] = "jensenshannon"
    cat_threshold: float = Field(0.1, gt=0)
    drift_share: float = Field(0.5, gt=0, le=1, description="drifted-column share that is drift")
    predictions: bool = Field(True, description="add the model's class and confidence columns")


class RegistryConfig(Section):
    """The MLflow Model Registry and the gate a new version must pass."""

    model_name: str = "digit-classifier"
    accuracy_threshold: float = Field(0.995, ge=0, le=1, description="minimum test accuracy")
    regression_tolerance: float = Field(
        0.001, ge=0, description="how much below production's test accuracy is still no regression"
    )
    drift_blocks: bool = Field(True, description="a drift verdict stops the version")
    quality_rules: bool = Field(
        True, description="also the rules below (off: accuracy, regression, drift only)"
    )
    class_recall_floor: float = Field(0.98, ge=0, le=1, description="every class's test recall")
    confusion_pairs: list[tuple[str, str]] = Field(
        [("4", "9"), ("3", "5"), ("3", "8"), ("5", "8"), ("1", "7")],
        description="digit pairs known to be confused",
    )
    confusion_budget: float = Field(
        0.01, ge=0, le=1, description="most of a pair's test digits confused either way"
    )
    ece_ceiling: float = Field(0.02, ge=0, le=1, description="expected calibration error on test")
    invariance_floor: float = Field(
        0.95, ge=0, le=1, description="answers kept under each behavioral perturbation"
    )
    directional_ceiling: float = Field(
        0.05, ge=0, le=1, description="non-digits answered with high confidence, at most"
    )
    approval: Literal["manual", "auto"] = Field(
        "manual", description="manual: a person runs `digitops promote`; auto: promote on pass"
    )


class DeployConfig(Section):
    """Where `deploy` puts the model, and the smoke test it must pass there."""

    target: Literal["local", "kubernetes"] = "local"
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535, description="0: a free port")
    store: str = Field(
        "artifacts/store",
        description="request store the service keeps predictions in (a directory or "
        "s3://bucket/prefix; empty: none)",
    )
    smoke_images: int = Field(200, ge=1, description="test digits posted after start-up")
    min_accuracy: float = Field(0.9, ge=0, le=1, description="smoke-test accuracy to keep it")
    startup_timeout_s: float = Field(120, gt=0)
    image: str = "ghcr.io/digitops/serving:0.1.0"
    namespace: str = "digitops"
    manifests: str = Field("manifests/serving", description="kustomization applied (kubernetes)")
    endpoint: str | None = Field(None, description="URL to smoke-test (kubernetes; default: svc)")


class MonitorConfig(Section):
    """`digitops monitor`: when the production loop alerts, retrains, promotes or rolls back.

    Drift uses the `drift` section's tests, on the window's requests against the reference data;
    live accuracy comes from the labels users and Label Studio gave."""

    window_hours: float = Field(24.0, gt=0, description="requests this recent are judged")
    min_requests: int = Field(200, ge=1, description="fewer requests: too few to judge drift")
    sample: int = Field(2000, ge=100, description="requests (at random) a drift test compares")
    embedding_drift_share: float = Field(
        0.5, gt=0, le=1, description="share of embedding dimensions drifted that is drift"
    )
    min_labels: int = Field(50, ge=1, description="labels before live accuracy is judged")
    accuracy_floor: float = Field(0.95, ge=0, le=1, description="live accuracy below: retrain")
    retrain_labels: int = Field(
        100, ge=1, description="new labels since the last training before a retrain starts"
    )
    cooldown_hours: float = Field(6.0, ge=0, description="no new retrain this soon after one")
    webhook: str = Field(
        "", description="URL told of alert and retrain decisions (JSON; Slack-compatible)"
    )
    webhook_timeout_s: float = Field(5.0, gt=0)
    kfp_host: str = Field("", description="KFP API that retrains (empty: the local runner)")
    retrain: dict[str, Any] = Field(
        default_factory=dict, description="pipeline parameters of a retrain run (e.g. epochs)"
    )
    rollout_labels: int = Field(
        50, ge=1, description="labeled requests of a challenger before it is judged"
    )
    rollout_tolerance: float = Field(
        0.0, ge=0, le=1, description="how far below the champion's live accuracy still promotes"
    )


class TrackingConfig(Section):
    """MLflow tracking. The URI defaults to $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."""

    enabled: bool = True
    uri: str = Field("", description="empty: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")

    @field_validator("uri", mode="before")
    @classmethod
    def _default_uri(cls, value: Any) -> Any:
        return "" if value is None else value  # `--set tracking.uri=` / `uri: null`: the default

    experiment: str = "digitops"


class Config(Section):
    """The whole configuration, one section per stage."""

    prepare: PrepareConfig = PrepareConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    tune: TuneConfig = TuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    explain: ExplainConfig = ExplainConfig()
    drift: DriftConfig = DriftConfig()
    registry: RegistryConfig = RegistryConfig()
    deploy: DeployConfig = DeployConfig()
    monitor: MonitorConfig = MonitorConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _searchable(self) -> Config:
        points = [*self.tune.space, *(key for point in self.tune.start_points for key in point)]
        for key in points:
            if key not in TUNABLE:
                raise ValueError(f"tune: '{key}' is not a tunable key ({', '.join(TUNABLE)})")
        return self


def _tunable_keys() -> list[str]:
    sections: dict[str, type[Section]] = {
        "model": ModelConfig,
        "train": TrainConfig,
        "augment": AugmentConfig,
    }
    keys = [f"{name}.{key}" for name, model in sections.items() for key in model.model_fields]
    return [key for key in keys if key not in _NOT_TUNABLE]


# Keys that set the run's length, reproducibility or output, not what the model learns.
_NOT_TUNABLE = {"train.epochs", "train.patience", "train.seed", "train.threads", "train.progress"}
TUNABLE = _tunable_keys()


def apply_params(config: Config, params: dict[str, Any]) -> Config:
    """`config` with dotted `section.key` values replaced (e.g. the tuned parameters)."""
    for key in params:
        if key not in TUNABLE:
            raise ConfigError(f"parameter '{key}' is not a tunable key ({', '.join(TUNABLE)})")
    return with_values(config, params)


def with_values(config: Config, values: dict[str, Any]) -> Config:
    """`config` with typed values set by dotted key (`train.epochs`), validated."""
    raw = config.model_dump()
    for key, value in values.items():
        _set(raw, key, value)
    return _validate(raw, None)


def current_params(config: Config, keys: list[str]) -> dict[str, Any]:
    """The values `config` holds for dotted `section.key` names."""
    return {key: value_at(config, key) for key in keys}


def value_at(config: Config, key: str) -> Any:
    """The value of one dotted key, e.g. `value_at(Config(), "train.epochs")`."""
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def parse_override(item: str, flag: str = "--set") -> tuple[str, Any]:
    """`key=value` → (key, value typed as YAML reads it: 3 → int, 0.9 → float; empty → None).
    The one parser of overrides, for `--set` and for pipeline `--param` alike."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{flag} {item!r}: expected key=value, e.g. train.epochs=3")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def load_config(
    path: Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> Config:
    """Build the config from defaults, an optional YAML file, `key=value` overrides and typed
    `values` by dotted key (later ones win)."""
    raw: dict[str, Any] = _read_yaml(path) if path is not None else {}
    for item in overrides or []:
        _set(raw, *parse_override(item))
    for key, value in (values or {}).items():
        _set(raw, key, value)
    return _validate(raw, path)


def _validate(raw: dict[str, Any], path: Path | None) -> Config:
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


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _describe(exc: ValidationError, path: Path | None) -> str:
    where = f"{path}: " if path else ""
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}'")
        else:
            problems.append(f"'{key}': {message}" if key else message)
    return f"{where}invalid config: " + "; ".join(problems)
