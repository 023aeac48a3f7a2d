"""The search on a Ray cluster it does not own: two nodes started with `ray start`, reached
through `tune.ray_address` as `--ray-address` does, with trials on both nodes."""

from pathlib import Path

import pandas as pd
import pytest

from digitops.stages import tune, tune_report

from ..conftest import make_config
from .topology import running_ray_cluster

pytestmark = [pytest.mark.rehearsal, pytest.mark.integration, pytest.mark.slow]


def test_trials_run_on_both_nodes_of_a_two_node_cluster(
    mnist_slice: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    with running_ray_cluster(tmp_path, nodes=2) as cluster:
        for name, value in cluster.env.items():  # the search's driver joins with the token
            monkeypatch.setenv(name, value)
        config = make_config(
            tmp_path,
            f"tune.ray_address={cluster.address}",
            "tune.trials=4",
            "tune.epochs=1",
            "tune.train_images=2000",
            "tune.cpus_per_trial=1",
            "tracking.enabled=false",
        )
        result = tune.run(config, mnist_slice, tmp_path / "tune")

    assert result.searched and result.trials == 4 and result.failed_trials == 0
    table = pd.read_csv(tmp_path / "tune" / tune_report.TRIALS_CSV)
    # Two one-CPU nodes, one CPU a trial: trials ran side by side, one on each node.
    assert set(table["node"]) == set(cluster.node_ids) and len(cluster.node_ids) == 2
    shown = (tmp_path / "tune" / tune_report.TRIALS_MD).read_text()
    assert all(node[:8] in shown for node in cluster.node_ids)
