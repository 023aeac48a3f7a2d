"""What `digitops pipeline run` tells of a failed task, and what task containers get of this
process's environment."""

import io

import pytest

from digitops.errors import tracking_unreachable
from digitops.pipeline.runner import _failure_line, _RunLog, task_env

REFUSED = (
    "mlflow.exceptions.MlflowException: API request to http://127.0.0.1:5000/api/2.0/mlflow/"
    "registered-models/alias failed with exception HTTPConnectionPool(host='127.0.0.1', "
    "port=5000): Max retries exceeded with url: /api/2.0/mlflow/registered-models/alias?name=m "
    "(Caused by NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=5000): Failed to "
    'establish a new connection: [Errno 111] Connection refused"))'
)


def _failed(*lines: str, before: tuple[str, ...] = ()) -> str:
    run_log = _RunLog(io.StringIO())
    run_log.write("\n".join(before) + "\nExecuting task 'tune'\n" + "\n".join(lines) + "\n")
    return _failure_line("Inner task failed: 'tune'", run_log.last_error)


def test_a_task_error_from_a_nested_module_is_the_one_line():
    line = _failed(
        "Traceback (most recent call last):", "digitops.stages.tune.TuneError: 2 of 2 trials failed"
    )
    assert line == "pipeline stopped: task 'tune' failed: TuneError: 2 of 2 trials failed"


def test_an_mlflow_server_that_does_not_answer_is_named_in_one_line():
    line = _failed("Traceback (most recent call last):", REFUSED)
    assert line == (
        "pipeline stopped: task 'tune' failed: MLflow's tracking server at "
        "http://127.0.0.1:5000 did not answer (Connection refused): start it, or check the "
        "tracking URI, and run again (`--cache` skips the tasks that finished)"
    )


def test_what_an_earlier_task_said_is_not_the_failure():
    earlier = ("Executing task 'prepare'", "digitops.errors.DataError: a warning it recovered from")
    assert _failed("Killed", before=earlier).endswith("failed: see its log above")


@pytest.mark.parametrize(
    ("detail", "said"),
    [
        ("(Caused by ResponseError('too many 500 error responses'))", "kept failing (too many 500"),
        (
            "(Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED]')))",
            "could not be verified",
        ),
        (
            '(Caused by ReadTimeoutError("Read timed out. (read timeout=120)"))',
            "did not answer (timed out)",
        ),
    ],
)
def test_how_the_server_failed_is_said(detail: str, said: str):
    message = (
        "API request to https://host.example/mlflow/api/2.0/mlflow/runs/create failed with "
        "exception HTTPSConnectionPool(host='host.example', port=443): Max retries exceeded "
        + detail
    )
    line = tracking_unreachable(message)
    assert line is not None and line.startswith(
        f"MLflow's tracking server at https://host.example/mlflow {said}"
    )


@pytest.mark.parametrize(
    "message",
    [
        "API request to http://h:5000/api/2.0/mlflow/runs/get failed with error code 401 != 200",
        "RESOURCE_DOES_NOT_EXIST: Run 'abc' not found",
    ],
)
def test_a_server_that_answers_is_not_called_unreachable(message: str):
    assert tracking_unreachable(message) is None


def test_task_containers_get_the_mlflow_and_ray_settings_only(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "secret")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "token")
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not theirs")
    monkeypatch.setenv("RAY_TMPDIR", "/tmp/mine")
    env = task_env()
    assert {"MLFLOW_TRACKING_PASSWORD", "RAY_AUTH_TOKEN", "RAY_ADDRESS"} <= set(env)
    assert not {"AWS_SECRET_ACCESS_KEY", "RAY_TMPDIR", "PATH", "HOME"} & set(env)
