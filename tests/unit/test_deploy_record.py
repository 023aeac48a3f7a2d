"""`deploy.stop` stops the recorded service and its workers, and only that process."""

import json
import subprocess
import sys

import psutil

from digitops.stages import deploy


def _record(tmp_path, process: dict | str | None) -> None:
    out = tmp_path / "deployment"
    out.mkdir(exist_ok=True)
    record = {"endpoint": "http://127.0.0.1:1", "target": "local", "process": process}
    (out / deploy.RECORD).write_text(json.dumps(record))


def test_stop_kills_only_the_process_it_started(tmp_path):
    service = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        started = psutil.Process(service.pid).create_time()
        # The same pid reused by a later process, or recorded in another PID namespace (a task
        # container): its start time differs, so it is left alone.
        _record(tmp_path, {"pid": service.pid, "create_time": started - 3600})
        assert deploy.stop(tmp_path / "deployment") == "http://127.0.0.1:1"
        _record(tmp_path, f"pid:[4026531836]:{service.pid}")  # a record from before psutil
        deploy.stop(tmp_path / "deployment")
        assert service.poll() is None

        _record(tmp_path, {"pid": service.pid, "create_time": started})
        deploy.stop(tmp_path / "deployment")
        service.wait(timeout=10)  # ended by the stop, well before its 60 s
    finally:
        service.kill()


def test_stop_ends_the_workers_of_the_service_too(tmp_path):
    # Like `digitops serve --workers N`: a parent whose children serve.
    parent = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    service = subprocess.Popen([sys.executable, "-c", parent], start_new_session=True)
    try:
        process = psutil.Process(service.pid)
        while not process.children():
            psutil.wait_procs([process], timeout=0.05)
        (worker,) = process.children()
        _record(tmp_path, {"pid": service.pid, "create_time": process.create_time()})
        deploy.stop(tmp_path / "deployment")
        service.wait(timeout=20)
        assert not worker.is_running()
    finally:
        service.kill()


def test_stop_without_a_record_does_nothing(tmp_path):
    assert deploy.stop(tmp_path / "deployment") is None
