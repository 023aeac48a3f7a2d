"""The `batch_predict` component's body: `digitops batch-predict` in a process of its own writes
the task's Parquet answers, whatever the artifact's name, and a user error fails the task with
the command's one line."""

from pathlib import Path

import pandas as pd
import pytest

from digitops.errors import DigitopsError
from digitops.pipeline.batch import batch_predict
from digitops.serving.batch import score

from ..serving.test_batch import DIGITS, centroid_model, image_folder


def test_the_task_writes_the_commands_answers_as_parquet(tmp_path: Path):
    model = centroid_model(tmp_path / "model")
    files = image_folder(tmp_path / "images")
    out = tmp_path / "outputs" / "answers"  # a KFP artifact path: no suffix
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = batch_predict(str(model), str(tmp_path / "images"), out, tracking)
    assert (done.images, done.failed) == (len(files), len(files) - DIGITS)
    assert (done.model_name, done.model_version) == ("local", "local")
    expected = pd.read_parquet(
        score(str(model), str(tmp_path / "images"), tmp_path / "in-process.parquet").out
    )
    pd.testing.assert_frame_equal(pd.read_parquet(out), expected)
    assert sorted(p.name for p in out.parent.iterdir()) == ["answers"], "no work folder left"

    with pytest.raises(DigitopsError, match=r"batch-predict: \S+/nowhere: no such folder"):
        batch_predict(str(model), str(tmp_path / "nowhere"), tmp_path / "failed", tracking)
    assert not (tmp_path / "failed").exists()
