"""The tune stage: a real Ray Tune search (Optuna + ASHA) of tiny Lightning trials."""

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from digitops.contracts import BestParams
from digitops.model.artifact import MODEL_CARD
from digitops.stages import tune, tune_report

from ..conftest import make_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Two epochs on 3,000 images: long enough to learn and for ASHA to judge, short enough for CI.
TINY = ["tune.epochs=2", "tune.train_images=3000", "tune.time_budget_s=240"]


def child_runs(tmp: Path, parent: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    return mlflow.search_runs(
        experiment_names=["digitops"], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )


def test_search_writes_best_params_trial_table_and_child_runs(tmp_path: Path, mnist_slice: Path):
    config = make_config(tmp_path, "tune.trials=2", *TINY)
    result = tune.run(config, mnist_slice, tmp_path / "tune")

    assert result.searched and result.trials == 2 and result.failed_trials == 0
    assert result.baseline_val_accuracy is not None
    assert result.top_val_accuracy >= result.baseline_val_accuracy > 0.5
    top, tolerance = result.top_val_accuracy, config.tune.accuracy_tolerance
    assert top - tolerance <= result.best_val_accuracy <= top
    best = json.loads((tmp_path / "tune" / tune.BEST).read_text())
    assert set(best["params"]) == set(config.tune.space)
    assert best["best_val_accuracy"] == pytest.approx(result.best_val_accuracy)

    table = pd.read_csv(tmp_path / "tune" / tune_report.TRIALS_CSV)
    assert len(table) == 2 and table["baseline"].sum() == 1
    assert set(table["status"]) <= {"completed", "stopped early"}
    assert table["epochs"].between(1, 2).all()
    assert table["parameters"].between(1, config.tune.max_parameters).all()
    assert (table["seconds"] > 0).all()
    assert (tmp_path / "tune" / tune_report.CURVES).stat().st_size > 10_000
    report = (tmp_path / "tune" / tune_report.REPORT).read_text()
    assert "Chosen trial: validation accuracy" in report
    assert "| trial" in (tmp_path / "tune" / tune_report.TRIALS_MD).read_text()

    runs = child_runs(tmp_path, result.mlflow_run_id)
    assert len(runs) == 2 and set(runs["status"]) == {"FINISHED"}
    assert runs["metrics.val_accuracy"].max() == pytest.approx(result.top_val_accuracy)
    assert "params.train.lr" in runs


def test_failing_trial_is_reported_and_the_search_goes_on(tmp_path: Path, mnist_slice: Path):
    # The second point is out of range: its trial raises a ConfigError inside the Ray worker.
    config = make_config(
        tmp_path, "tune.trials=2", "tune.start_points=[{model.dropout: 1.5}]", *TINY
    )
    result = tune.run(config, mnist_slice, tmp_path / "tune")

    assert result.trials == 2 and result.failed_trials == 1
    table = pd.read_csv(tmp_path / "tune" / tune_report.TRIALS_CSV).fillna("")
    failed = table[table["status"] == "failed"].iloc[0]
    assert failed["model.dropout"] == 1.5 and "model.dropout" in failed["error"]
    assert json.loads((tmp_path / "tune" / tune.BEST).read_text())["params"]["model.dropout"] == 0
    runs = child_runs(tmp_path, result.mlflow_run_id)
    assert sorted(runs["status"]) == ["FAILED", "FINISHED"]


def test_every_trial_failing_fails_the_stage_with_one_message(tmp_path: Path, mnist_slice: Path):
    config = make_config(
        tmp_path,
        "tune.trials=2",
        "tune.baseline=false",
        "tune.start_points=[{model.dropout: 1.5}, {augment.rotate: 200.0}]",
        *TINY,
    )
    with pytest.raises(tune.TuneError, match="all 2 trials failed") as failure:
        tune.run(config, mnist_slice, tmp_path / "tune")
    assert "model.dropout" in str(failure.value) and "augment.rotate" in str(failure.value)
    assert not (tmp_path / "tune").exists()


def test_zero_trials_records_the_configured_values(tmp_path: Path, mnist_slice: Path):
    result = tune.run(make_config(tmp_path, "tune.trials=0"), mnist_slice, tmp_path / "tune")
    assert not result.searched and result.best_params == {}
    assert BestParams.read(tmp_path / "tune").params == {}
    assert "skipped" in (tmp_path / "tune" / tune_report.REPORT).read_text()


def test_train_uses_the_tuned_params_and_their_augmentation(tmp_path: Path, mnist_slice: Path):
    from digitops.stages import train

    params = {"model.width": 6, "augment.rotate": 3.0}
    config = make_config(tmp_path, "train.epochs=1")
    train.run(config, mnist_slice, tmp_path / "model", params)

    card = json.loads((tmp_path / "model" / MODEL_CARD).read_text())
    assert card["hyperparameters"]["model"]["width"] == 6
    affine = card["augmentation"]["transform"]["transforms"][0]
    assert affine["rotate"] == [-3.0, 3.0]
