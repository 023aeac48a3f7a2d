"""The request log: rotation under concurrent writers, failures that never raise, and readers
that skip a broken line instead of refusing the log."""

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from digitops.data.current import load_current
from digitops.errors import DataError
from digitops.serving import metrics
from digitops.serving.predictor import Prediction
from digitops.serving.request_log import RequestLog

PREDICTION = Prediction("7", 0.9, {"7": 0.9}, [{"digit": "7", "probability": 0.9}])


def _write(path: str, records: int) -> None:
    log = RequestLog(Path(path), max_bytes=20_000)
    image = np.zeros((1, 28, 28), dtype=np.float32)
    image[0, 4:24, 12:16] = 1.0
    for _ in range(records):
        assert log.append(image, [PREDICTION], "3")


def test_four_writers_rotate_without_losing_or_splitting_a_record(tmp_path: Path):
    path = tmp_path / "logs" / "requests.jsonl"
    writers = [
        multiprocessing.get_context("spawn").Process(target=_write, args=(str(path), 250))
        for _ in range(4)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0
    files = sorted(path.parent.glob("requests*.jsonl"))
    assert len(files) > 5, "the log rotated"
    lines = [line for file in files for line in file.read_text().splitlines()]
    assert len(lines) == 1000 and all(json.loads(line)["predicted"] == "7" for line in lines)
    assert len(load_current(path.parent)) == 1000  # drift reads the log and its rotated files


def test_a_log_that_cannot_be_written_counts_and_never_raises(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    log = RequestLog(blocker / "requests.jsonl")
    before = metrics.REQUEST_LOG_FAILURES._value.get()
    assert log.append(np.zeros((2, 28, 28), np.float32), [PREDICTION] * 2, "3") is False
    assert metrics.REQUEST_LOG_FAILURES._value.get() == before + 2


def test_a_broken_line_is_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    path = tmp_path / "requests.jsonl"
    _write(str(path), 3)
    with path.open("a") as log:
        log.write('{"mean_intensity": 0.1, "pred')  # a write cut short by a crash
    assert len(load_current(path)) == 3
    assert "skipped 1 line(s)" in caplog.text


def test_a_file_with_no_record_is_still_refused(tmp_path: Path):
    path = tmp_path / "requests.jsonl"
    path.write_text("this is not\nJSON at all\n")
    with pytest.raises(DataError, match="no line is a JSON record"):
        load_current(path)
