"""The local deploy target's start-up: a service that dies is reported at once, with its log."""

import time

import pytest

from digitops.config import Config
from digitops.deploy import DeployError, local


def test_start_fails_fast_and_points_at_the_log_when_the_service_dies(tmp_path):
    config = Config.model_validate(
        {
            "deploy": {"store": str(tmp_path / "store"), "startup_timeout_s": 60},
            "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        }
    )
    log = tmp_path / "deployment.log"
    started = time.monotonic()
    with pytest.raises(DeployError, match="has ended.*its log") as failure:
        local.start(config, str(tmp_path / "no-model"), log)
    assert time.monotonic() - started < 30  # not the 60 s start-up timeout
    assert str(log) in str(failure.value)
    assert "no-model" in log.read_text()  # `digitops serve` said why
