"""Batch inference for a KFP task: `digitops batch-predict` run in a process of its own.

The scoring lives in `digitops.serving.batch` (the service's predictor and preprocessing), and
the pipeline and serving layers may not import each other (pyproject.toml's `layers` contract),
so the task runs the command instead, as the deploy stage runs `digitops serve`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from digitops.errors import DigitopsError


@dataclass(frozen=True)
class BatchSummary:
    """What the answers file holds: rows (images), rows with an error, and the model."""

    images: int
    failed: int
    model_name: str
    model_version: str


def batch_predict(model_uri: str, source: str, out: Path, tracking_uri: str) -> BatchSummary:
    """Score `source` (a folder or s3://bucket/prefix) with `model_uri` (empty: the registry's
    production version, else its candidate) into `out` as Parquet, whatever its name; the
    command's output is passed on, and its error line raised (as a `DigitopsError` when it was
    the user's)."""
    import pyarrow.parquet as pq

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        answers = work / "answers.parquet"  # the command picks the format by the suffix
        argv = [sys.executable, "-m", "digitops.cli", "batch-predict", source, "--out", answers]
        argv += ["--model", model_uri] if model_uri else []
        env = os.environ | {"MLFLOW_TRACKING_URI": tracking_uri}
        done = subprocess.run(list(map(str, argv)), env=env, capture_output=True, text=True)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            error = DigitopsError if done.returncode == 2 else RuntimeError
            raise error(f"digitops batch-predict: {last.removeprefix('error: ')}")
        rows = pq.read_table(answers, columns=["error", "model_name", "model_version"])
        os.replace(answers, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    column = rows.to_pydict()
    return BatchSummary(
        images=rows.num_rows,
        failed=sum(1 for error in column["error"] if error),
        model_name=column["model_name"][0],
        model_version=column["model_version"][0],
    )
