"""`deploy.stop` stops the recorded service, and only that process."""

import json
import subprocess

from digitops.stages import deploy


def _record(tmp_path, pid: int, process: str | None) -> None:
    out = tmp_path / "deployment"
    out.mkdir(exist_ok=True)
    record = {"endpoint": "http://127.0.0.1:1", "pid": pid, "process": process}
    (out / deploy.RECORD).write_text(json.dumps(record))


def test_stop_kills_only_the_process_it_started(tmp_path):
    service = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        # The same pid in another PID namespace (a task container), or reused by a new process.
        _record(tmp_path, service.pid, "pid:[4026531836]:12345")
        assert deploy.stop(tmp_path / "deployment") == "http://127.0.0.1:1"
        assert service.poll() is None

        _record(tmp_path, service.pid, deploy._identity(service.pid))
        deploy.stop(tmp_path / "deployment")
        assert service.wait(timeout=10) != 0
    finally:
        service.kill()
