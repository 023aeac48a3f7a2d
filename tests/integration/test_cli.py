"""The `digitops` command as users run it: a subprocess, exit codes, one-line errors."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from digitops.data.sources import bundled_mnist_dir

pytestmark = pytest.mark.integration

DIGITOPS = [sys.executable, "-m", "digitops.cli"]


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    # mlflow.set_tracking_uri() in this test process exports MLFLOW_TRACKING_URI; the CLI must
    # see a user's environment instead, where the default store is ./mlflow.db.
    base = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [*DIGITOPS, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=600,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys, digitops.cli; heavy = {'torch', 'lightning', 'mlflow', 'albumentations'}"
        " & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_source(tmp_path: Path):
    assert_one_line_error(
        run_cli("prepare", "--source", "nowhere", cwd=tmp_path), "nowhere: data source not found"
    )


def test_corrupt_bundled_mnist(tmp_path: Path):
    corrupt = tmp_path / "mnist"
    shutil.copytree(bundled_mnist_dir(), corrupt)
    path = corrupt / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-5000])
    result = run_cli("prepare", cwd=tmp_path, env={"DIGITOPS_MNIST_DIR": str(corrupt)})
    assert_one_line_error(result, "t10k-images-idx3-ubyte.gz")
    assert not (tmp_path / "artifacts" / "dataset").exists()


def test_unknown_config_key(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epoch: 3\n")
    assert_one_line_error(
        run_cli("train", "--config", str(config), cwd=tmp_path), "unknown key 'train.epoch'"
    )


def test_empty_image_folder(tmp_path: Path):
    (tmp_path / "imgs" / "0").mkdir(parents=True)
    assert_one_line_error(run_cli("prepare", "--source", "imgs", cwd=tmp_path), "no images found")


def test_label_outside_the_classes(tmp_path: Path):
    from PIL import Image

    (tmp_path / "imgs" / "7").mkdir(parents=True)
    Image.new("L", (28, 28)).save(tmp_path / "imgs" / "7" / "a.png")
    result = run_cli(
        "prepare", "--source", "imgs", "--set", "prepare.classes=['0','1']", cwd=tmp_path
    )
    assert_one_line_error(result, "['7'] are outside the configured classes")


def test_train_without_a_dataset(tmp_path: Path):
    assert_one_line_error(
        run_cli("train", "--data", "missing", cwd=tmp_path), "not a dataset directory"
    )


def test_evaluate_without_a_model(tmp_path: Path, mnist_slice: Path):
    result = run_cli("evaluate", "--model", "missing", "--data", str(mnist_slice), cwd=tmp_path)
    assert_one_line_error(result, "not a model directory")


@pytest.mark.slow
def test_every_stage_through_the_cli(tmp_path: Path):
    sets = ["--set", "train.progress=false"]
    assert run_cli("prepare", "--limit", "600", *sets, cwd=tmp_path).returncode == 0
    tuned = run_cli("tune", "--trials", "0", cwd=tmp_path)
    assert tuned.returncode == 0 and "no search" in tuned.stdout, tuned.stderr
    trained = run_cli("train", "--epochs", "1", "--params", "artifacts/tune", *sets, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "val_accuracy:" in trained.stdout and (tmp_path / "mlflow.db").is_file()
    evaluated = run_cli("evaluate", *sets, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert (tmp_path / "artifacts" / "evaluation" / "metrics.json").is_file()
    explained = run_cli("explain", "--set", "explain.faithfulness_images=100", cwd=tmp_path)
    assert explained.returncode == 0 and "random" in explained.stdout, explained.stderr
    drifted = run_cli("drift", "--model", "artifacts/model", cwd=tmp_path)
    assert drifted.returncode == 0 and "no drift" in drifted.stdout, drifted.stderr


@pytest.mark.slow
def test_tune_with_every_trial_failing(tmp_path: Path, mnist_slice: Path):
    result = run_cli(
        "tune",
        *("--data", str(mnist_slice), "--trials", "1"),
        *("--set", "tune.baseline=false", "--set", "tune.start_points=[{model.dropout: 1.5}]"),
        cwd=tmp_path,
    )
    assert_one_line_error(result, "all 1 trials failed")
    assert "model.dropout" in result.stderr and not (tmp_path / "artifacts" / "tune").exists()


def test_train_with_a_file_that_is_not_best_params(tmp_path: Path, mnist_slice: Path):
    (tmp_path / "params.json").write_text("[1, 2]")
    result = run_cli("train", "--data", str(mnist_slice), "--params", "params.json", cwd=tmp_path)
    assert_one_line_error(result, "not a best-parameters file")


def test_explain_without_a_model(tmp_path: Path, mnist_slice: Path):
    result = run_cli("explain", "--model", "missing", "--data", str(mnist_slice), cwd=tmp_path)
    assert_one_line_error(result, "not a model directory")


def _empty_folder(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _text_files(tmp: Path) -> Path:
    (tmp / "notes").mkdir()
    (tmp / "notes" / "a.txt").write_text("not an image")
    return tmp / "notes"


def _fake_png(tmp: Path) -> Path:
    (tmp / "fake").mkdir()
    (tmp / "fake" / "digit.png").write_bytes(b"this is text, not a PNG")
    return tmp / "fake"


def _empty_log(tmp: Path) -> Path:
    (tmp / "requests.jsonl").write_text("")
    return tmp / "requests.jsonl"


def _broken_log(tmp: Path) -> Path:
    (tmp / "requests.jsonl").write_text('{"mean_intensity": 0.1,\n')
    return tmp / "requests.jsonl"


def _spreadsheet(tmp: Path) -> Path:
    (tmp / "data.xlsx").write_bytes(b"PK")
    return tmp / "data.xlsx"


@pytest.mark.parametrize(
    ("make_current", "message"),
    [
        (lambda tmp: tmp / "missing", "current data not found"),
        (_empty_folder, "no image files"),
        (_text_files, "no image files"),
        (_fake_png, "digit.png: not a readable image"),
        (_empty_log, "the request log is empty"),
        (_broken_log, "not a request log"),
        (_spreadsheet, "not current data"),
    ],
    ids=["missing", "empty-folder", "no-images", "fake-png", "empty-log", "broken-log", "xlsx"],
)
def test_drift_rejects_bad_current_data(tmp_path: Path, mnist_slice: Path, make_current, message):
    current = make_current(tmp_path)
    result = run_cli(
        "drift", "--reference", str(mnist_slice), "--current", str(current), cwd=tmp_path
    )
    assert_one_line_error(result, message)


def test_submit_to_unreachable_host(tmp_path: Path):
    result = run_cli(
        "pipeline",
        "submit",
        "--host",
        "http://127.0.0.1:9",
        "--pipeline",
        str(Path(__file__).resolve().parents[2] / "pipelines" / "digits.yaml"),
        cwd=tmp_path,
    )
    assert_one_line_error(result, "http://127.0.0.1:9: ")
