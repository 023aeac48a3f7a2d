"""The pipeline's parameters and the config value each one sets: the one table between them.

Defaults come from `Config()` (the only home of defaults; a test compares the compiled YAML with
it). Components name their inputs as the pipeline does and turn them into config values here.
`current_data` is no config value: it names the data the drift task checks (empty: test split);
nor is `trigger`: why the run started (the monitor's reasons, as JSON; empty: by hand), which
the registered version keeps as its `trigger` tag.
"""

from __future__ import annotations

from typing import Any

from digitops.config import Config, value_at

PARAMETERS = {
    "source": "prepare.source",
    "mnist_ratio": "prepare.mnist_ratio",
    "limit": "prepare.limit",
    "prepare_seed": "prepare.seed",
    "tune_trials": "tune.trials",
    "tune_seed": "tune.seed",
    "ray_address": "tune.ray_address",
    "epochs": "train.epochs",
    "train_seed": "train.seed",
    "accuracy_threshold": "registry.accuracy_threshold",
    "regression_tolerance": "registry.regression_tolerance",
    "drift_blocks_promotion": "registry.drift_blocks",
    "quality_rules": "registry.quality_rules",
    "approval": "registry.approval",
    "model_name": "registry.model_name",
    "deploy_target": "deploy.target",
    "smoke_min_accuracy": "deploy.min_accuracy",
    "mlflow_tracking_uri": "tracking.uri",
}
DEFAULTS = {name: value_at(Config(), key) for name, key in PARAMETERS.items()}


def config_values(**arguments: Any) -> dict[str, Any]:
    """Pipeline arguments by parameter name → config values by dotted key."""
    return {PARAMETERS[name]: value for name, value in arguments.items()}
