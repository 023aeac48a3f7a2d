"""Stage `tune`: Ray Tune searches the training hyper-parameters; `train` then uses the best.

Optuna's TPE proposes each trial (the configured values first, as the baseline), ASHA stops
weak trials after each epoch, and every trial is a Lightning run on a subset of the training
split, tracked as an MLflow child run. Ray runs in-process unless `RAY_ADDRESS` names a cluster.
The space is bounded by `tune.max_parameters`: a width whose model would exceed it is refused
before any trial runs. The best trial is the fastest (seconds per epoch) of those within
`tune.accuracy_tolerance` of the top validation accuracy, so the search never buys a few
hundredths of a point with twice the training.
Outputs: `best_params.json` (what `train --params` reads), the trial table (`trials.csv`,
`trials.md`, with each trial's parameters and seconds), validation curves (`val_accuracy.png`)
and `report.html`.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from digitops import __version__
from digitops.config import Config, SearchDim, apply_params, current_params
from digitops.contracts import BestParams
from digitops.data.dataset import Dataset, Split, load_dataset
from digitops.errors import ConfigError, DigitopsError
from digitops.fileio import atomic_dir
from digitops.progress import duration, report
from digitops.results import StageResult, log_to_mlflow, metric
from digitops.stages import tune_report

log = logging.getLogger(__name__)

BEST = BestParams.file_name
METRIC = "val_accuracy"


class TuneError(DigitopsError):
    """The search produced no usable trial."""


@dataclass(frozen=True)
class TuneResult(StageResult):
    """The numbers `tune` reports."""

    out_dir: Path
    searched: bool
    best_params: dict[str, Any]
    best_val_accuracy: float | None = metric()  # the chosen trial's (see _cheapest_near_top)
    top_val_accuracy: float | None = metric()  # the highest of any trial
    baseline_val_accuracy: float | None = metric()
    trials: int = metric()
    failed_trials: int = metric()
    tune_seconds: float = metric()
    mlflow_run_id: str | None = None

    def heading(self) -> str:
        return "hyper-parameter search" if self.searched else "no search (0 trials)"


def run(config: Config, data_dir: Path, out_dir: Path) -> TuneResult:
    """Search on `data_dir` and write the results to `out_dir` (0 trials: record the defaults)."""
    started = time.perf_counter()
    dataset = load_dataset(data_dir)
    if config.tune.trials == 0:
        return _skip(config, out_dir, started)
    _check_baseline(config)
    _check_parameter_budget(config, len(dataset.class_names))
    if not config.tracking.enabled:
        return _search(config, dataset, out_dir, started, parent_run_id=None)

    import mlflow

    from digitops.tracking import start_run

    with start_run(config.tracking, run_name="tune") as active:
        mlflow.set_tags(
            {"stage": "tune", "dataset_version": dataset.version, "digitops_version": __version__}
        )
        mlflow.log_params(_budget(config) | {"space": ", ".join(config.tune.space)})
        result = _search(config, dataset, out_dir, started, parent_run_id=active.info.run_id)
        mlflow.log_params({f"best.{key}": value for key, value in result.best_params.items()})
        log_to_mlflow(result)
        mlflow.log_artifacts(str(out_dir), artifact_path="tune")
    return result


def train_trial(
    params: dict[str, Any], base: dict[str, Any], data: dict[str, Split], stats: dict[str, Any]
) -> None:
    """One trial (runs in a Ray worker): a Lightning run that reports val accuracy per epoch."""
    import lightning as L
    import torch
    from ray.tune.integration.pytorch_lightning import TuneReportCheckpointCallback

    from digitops.data.augment import build_augmentation
    from digitops.data.datamodule import DigitDataModule
    from digitops.model.module import DigitClassifier

    config = apply_params(Config.model_validate(base), params)
    torch.set_num_threads(config.tune.cpus_per_trial)
    L.seed_everything(config.train.seed, verbose=False)
    module = DigitClassifier.from_config(config.model, config.train, int(stats["classes"]), stats)
    datamodule = DigitDataModule(
        data["train"],
        data["val"],
        config.train.batch_size,
        config.train.seed,
        build_augmentation(config.augment),
    )

    class NodeReport(TuneReportCheckpointCallback):
        """Reports the Ray node the trial runs on beside its metrics (`node` in the trial
        table): Ray's own results name only the node's IP, which every node of a one-machine
        cluster shares. `_get_report_dict` is the callback's hook for what it reports."""

        def _get_report_dict(self, trainer: Any, pl_module: Any) -> dict[str, Any] | None:
            import ray

            reported: dict[str, Any] | None = super()._get_report_dict(trainer, pl_module)
            if reported is not None:
                reported[tune_report.NODE] = ray.get_runtime_context().get_node_id()
            return reported

    report = NodeReport({METRIC: "val_accuracy", "val_loss": "val_loss"}, save_checkpoints=False)
    trainer = L.Trainer(
        max_epochs=config.tune.epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[report],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=datamodule)


def _search(
    config: Config, dataset: Dataset, out_dir: Path, started: float, parent_run_id: str | None
) -> TuneResult:
    import ray
    from ray import tune

    cfg = config.tune
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    _start_ray(address)
    try:
        with tempfile.TemporaryDirectory(prefix="digitops-tune-") as storage:
            trainable = tune.with_resources(
                tune.with_parameters(
                    train_trial,
                    base=config.model_dump(),
                    data=_trial_data(config, dataset),
                    stats=dataset.stats | {"classes": len(dataset.class_names)},
                ),
                {"cpu": cfg.cpus_per_trial},
            )
            tuner = tune.Tuner(
                trainable,
                param_space={key: _domain(dim) for key, dim in cfg.space.items()},
                tune_config=tune.TuneConfig(
                    metric=METRIC,
                    mode="max",
                    search_alg=_searcher(config),
                    scheduler=_scheduler(config),
                    num_samples=cfg.trials,
                    time_budget_s=cfg.time_budget_s,
                ),
                run_config=tune.RunConfig(
                    name="digitops-tune",
                    storage_path=storage,
                    callbacks=_callbacks(config, parent_run_id),
                    failure_config=tune.FailureConfig(max_failures=0),
                    verbose=0,
                ),
            )
            trials = tune_report.trial_table(
                tuner.fit(),
                cfg.epochs,
                _baseline(config),
                parameters=lambda params: _parameters(config, params, len(dataset.class_names)),
            )
    finally:
        ray.shutdown()
    return _write(config, trials, out_dir, started, parent_run_id)


def _start_ray(address: str | None) -> None:
    # Ray's newer console output prints a banner whatever the verbosity; the classic one is quiet.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    _quiet_search_libraries()
    try:
        if address:
            ray.init(
                address=address,
                logging_level=logging.ERROR,
                log_to_driver=False,
                runtime_env={"env_vars": _mlflow_env()},
            )
        else:
            ray.init(
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise TuneError(f"cannot start Ray at {address or 'this machine'}: {exc}") from None


def _mlflow_env() -> dict[str, str]:
    """This process's MLflow settings (tracking URI, login), for the cluster's processes: through
    Ray Client (`ray://`) the search itself runs on the cluster, and its MLflow callback logs
    from there, where the login of this task's pod is not."""
    return {name: value for name, value in os.environ.items() if name.startswith("MLFLOW_")}


def _quiet_search_libraries() -> None:
    """This stage reports every failed trial itself, in one line; Ray would add a traceback."""
    import warnings

    import optuna

    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A start point outside the search range is allowed (and fails in its trial if invalid).
    warnings.filterwarnings("ignore", message=r"Fixed parameter .* is out of range")


def _trial_data(config: Config, dataset: Dataset) -> dict[str, Split]:
    """The training subset every trial sees (the same images, so trials compare fairly)."""
    train, limit = dataset.split("train"), config.tune.train_images
    if limit is not None and limit < len(train.labels):
        pick = np.random.default_rng(config.tune.seed).choice(len(train.labels), limit, False)
        train = Split(images=train.images[pick], labels=train.labels[pick])
    return {"train": train, "val": dataset.split("val")}


def _domain(dim: SearchDim) -> Any:
    from ray import tune

    if dim.kind == "choice":
        return tune.choice(list(dim.values or []))
    low, high = float(dim.low or 0), float(dim.high or 0)
    if dim.kind == "loguniform":
        return tune.loguniform(low, high)
    if dim.kind == "int":
        return tune.randint(int(low), int(high) + 1)
    return tune.uniform(low, high)


def _baseline(config: Config) -> dict[str, Any] | None:
    """The configured values of the searched keys, if they are to be evaluated as a trial."""
    return current_params(config, list(config.tune.space)) if config.tune.baseline else None


def _searcher(config: Config) -> Any:
    from ray.tune.search.optuna import OptunaSearch

    configured = current_params(config, list(config.tune.space))
    points = [configured] if config.tune.baseline else []
    points += [configured | point for point in config.tune.start_points]
    return OptunaSearch(points_to_evaluate=points or None, seed=config.tune.seed)


def _scheduler(config: Config) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    cfg = config.tune
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=cfg.epochs,
        grace_period=min(cfg.grace_epochs, cfg.epochs),
        reduction_factor=cfg.reduction_factor,
    )


def _callbacks(config: Config, parent_run_id: str | None) -> list[Any]:
    from ray.tune import Callback

    class TrialProgress(Callback):
        """One progress line per finished trial: its score, epochs, time and parameters."""

        def __init__(self) -> None:
            self.finished = 0

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.finished += 1
            result = trial.last_result or {}
            epochs = int(result.get("training_iteration", 0))
            stopped = " (stopped early)" if epochs < config.tune.epochs else ""
            params = ", ".join(
                f"{k.split('.')[-1]} {tune_report.format_value(v)}" for k, v in trial.config.items()
            )
            report(
                f"trial {self.finished}/{config.tune.trials}: {METRIC} "
                f"{float(result.get(METRIC, 0.0)):.4f} after {epochs} epoch(s){stopped}, "
                f"{duration(float(result.get('time_total_s', 0.0)))}; {params}"
            )

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.finished += 1
            report(f"trial {self.finished}/{config.tune.trials}: failed")

    if parent_run_id is None:
        return [TrialProgress()]
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    from digitops.tracking import tracking_uri

    return [
        TrialProgress(),
        MLflowLoggerCallback(
            tracking_uri=tracking_uri(config.tracking),
            experiment_name=config.tracking.experiment,
            tags={"mlflow.parentRunId": parent_run_id, "stage": "tune-trial"},
        ),
    ]


def _check_baseline(config: Config) -> None:
    """Optuna can only enqueue the baseline if each configured choice is among the values."""
    if not config.tune.baseline:
        return
    for key, dim in config.tune.space.items():
        value = current_params(config, [key])[key]
        if dim.kind == "choice" and value not in (dim.values or []):
            raise ConfigError(
                f"tune.baseline: the configured {key}={value} is not among "
                f"tune.space.{key}.values {dim.values}; add it or set tune.baseline=false"
            )


def _widths(config: Config) -> set[int]:
    """Every model width the search can try: the space's, the start points', the configured."""
    dim = config.tune.space.get("model.width")
    widths = {config.model.width} if dim is None or config.tune.baseline else set()
    if dim is not None and dim.kind == "choice":
        widths |= {int(value) for value in dim.values or []}
    elif dim is not None:
        widths |= {int(dim.low or 0), int(dim.high or 0)}  # parameters grow with the width
    return widths | {int(p["model.width"]) for p in config.tune.start_points if "model.width" in p}


def _parameters(config: Config, params: dict[str, Any], classes: int) -> int:
    from digitops.model.cnn import parameters_at

    width = params.get("model.width", config.model.width)
    return parameters_at(int(width), classes)


def _check_parameter_budget(config: Config, classes: int) -> None:
    """The space is bounded by `tune.max_parameters`, checked before Ray starts, so no trial
    trains a model over it (rather than a search that filters them after)."""
    from digitops.model.cnn import parameters_at

    budget = config.tune.max_parameters
    if budget is None:
        return
    widest = max(_widths(config))
    if parameters_at(widest, classes) <= budget:
        return
    fits = [w for w in range(1, widest) if parameters_at(w, classes) <= budget]
    hint = (
        f"the widest that fits is {fits[-1]} ({parameters_at(fits[-1], classes):,})"
        if fits
        else "no width fits"
    )
    raise ConfigError(
        f"tune: model.width {widest} has {parameters_at(widest, classes):,} parameters, over "
        f"tune.max_parameters={budget:,}; {hint}. Narrow tune.space.model.width or raise the budget"
    )


def _budget(config: Config) -> dict[str, Any]:
    cfg = config.tune
    return {
        "trials": cfg.trials,
        "time_budget_s": cfg.time_budget_s,
        "epochs_per_trial": cfg.epochs,
        "train_images": cfg.train_images,
        "cpus_per_trial": cfg.cpus_per_trial,
        "max_parameters": cfg.max_parameters,
        "accuracy_tolerance": cfg.accuracy_tolerance,
    }


def _write(
    config: Config,
    trials: tune_report.Trials,
    out_dir: Path,
    started: float,
    parent_run_id: str | None,
) -> TuneResult:
    table = trials.table
    ok = table[table["status"] != "failed"]
    if ok.empty:
        errors = "; ".join(f"{row.trial}: {row.error}" for row in table.itertuples())
        raise TuneError(f"all {len(table)} trials failed — {errors}")
    best = _cheapest_near_top(ok, config.tune.accuracy_tolerance)
    keys = list(config.tune.space)
    baseline = table[table["baseline"]]
    baseline_acc = (
        float(baseline["val_accuracy"].iloc[0])
        if not baseline.empty and baseline["status"].iloc[0] != "failed"
        else None
    )
    result = TuneResult(
        out_dir,
        searched=True,
        best_params={key: _plain(best[key]) for key in keys},
        best_val_accuracy=float(best["val_accuracy"]),
        top_val_accuracy=float(ok["val_accuracy"].max()),
        baseline_val_accuracy=baseline_acc,
        trials=len(table),
        failed_trials=int((table["status"] == "failed").sum()),
        tune_seconds=time.perf_counter() - started,
        mlflow_run_id=parent_run_id,
    )
    for row in table[table["status"] == "failed"].itertuples():
        log.warning("trial %s failed: %s", row.trial, row.error)
    with atomic_dir(out_dir, marker=BEST) as tmp:
        tune_report.write(trials, keys, tmp, str(best["trial"]), config.tune.accuracy_tolerance)
        _best_file(config, result, str(best["trial"]), int(best["epochs"])).write(tmp)
    return result


def _cheapest_near_top(trials: pd.DataFrame, tolerance: float) -> pd.Series:
    """The trial with the fewest seconds per epoch among those within `tolerance` of the top
    validation accuracy (trials ran side by side on equal CPUs, so their seconds compare)."""
    scored = trials.dropna(subset=["val_accuracy"])
    if scored.empty:
        raise TuneError(f"none of the {len(trials)} trials reported a validation accuracy")
    near = scored[scored["val_accuracy"] >= scored["val_accuracy"].max() - tolerance]
    return near.loc[(near["seconds"] / near["epochs"].clip(lower=1)).idxmin()]


def _skip(config: Config, out_dir: Path, started: float) -> TuneResult:
    result = TuneResult(
        out_dir,
        searched=False,
        best_params={},
        best_val_accuracy=None,
        top_val_accuracy=None,
        baseline_val_accuracy=None,
        trials=0,
        failed_trials=0,
        tune_seconds=time.perf_counter() - started,
    )
    with atomic_dir(out_dir, marker=BEST) as tmp:
        _best_file(config, result, None, None).write(tmp)
        tune_report.write_skipped(tmp)
    return result


def _best_file(
    config: Config, result: TuneResult, trial: str | None, epochs: int | None
) -> BestParams:
    return BestParams(
        searched=result.searched,
        params=result.best_params,
        best_val_accuracy=result.best_val_accuracy,
        top_val_accuracy=result.top_val_accuracy,
        trial=trial,
        epochs=epochs,
        baseline_val_accuracy=result.baseline_val_accuracy,
        trials=result.trials,
        failed_trials=result.failed_trials,
        budget=_budget(config),
        tune_seconds=round(result.tune_seconds, 1),
        mlflow_run_id=result.mlflow_run_id,
    )


def _plain(value: Any) -> Any:
    """numpy scalars (from the trial table) as JSON-friendly Python values."""
    return value.item() if isinstance(value, np.generic) else value
