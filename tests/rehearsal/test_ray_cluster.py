"""The search on a Ray cluster it does not own: two nodes started with `ray start`, reached by
`digitops tune --ray-address` from a process of its own, with trials on both nodes.

The search runs in a subprocess, as a user's command does: Ray reads a process's token and
authentication mode once, so a test process that already ran Ray in-process (the other tests)
could not join a cluster with a token of its own."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from digitops.stages import tune_report

from .topology import running_ray_cluster

pytestmark = [pytest.mark.rehearsal, pytest.mark.integration, pytest.mark.slow]


def test_trials_run_on_both_nodes_of_a_two_node_cluster(mnist_slice: Path, tmp_path: Path):
    out = tmp_path / "tune"
    with running_ray_cluster(tmp_path, nodes=2) as cluster:
        settings = [
            "tune.epochs=1",
            "tune.train_images=2000",
            "tune.cpus_per_trial=1",
            "tracking.enabled=false",
            "train.progress=false",
        ]
        searched = subprocess.run(
            [
                *(sys.executable, "-m", "digitops.cli", "tune", "--data", str(mnist_slice)),
                *("--out", str(out), "--trials", "4", "--ray-address", cluster.address),
                *(arg for setting in settings for arg in ("--set", setting)),
            ],
            capture_output=True,
            text=True,
            # The cluster's token, as a user's shell would have it; no other Ray setting.
            env={k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | cluster.env,
            timeout=600,
        )
    assert searched.returncode == 0, searched.stdout[-3000:] + searched.stderr[-3000:]
    table = pd.read_csv(out / tune_report.TRIALS_CSV)
    assert len(table) == 4 and table["val_accuracy"].notna().all()
    # Two one-CPU nodes, one CPU a trial: trials ran side by side, one on each node.
    assert set(table["node"]) == set(cluster.node_ids) and len(cluster.node_ids) == 2
    shown = (out / tune_report.TRIALS_MD).read_text()
    assert all(node[:8] in shown for node in cluster.node_ids)
