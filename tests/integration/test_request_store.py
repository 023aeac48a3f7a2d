"""The request store under a real 2-worker service when things go wrong: a worker killed in the
middle of a load, a store that turns read-only, a disk that fills up, a store path that cannot
be one. Predictions keep flowing (no 5xx), nothing acknowledged is lost, no record is half."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from digitops.data.idx import BUNDLED_MNIST, load_idx_dir
from digitops.serving.recorder import PAUSE_S
from digitops.store.layout import image_from_bytes, image_hash
from digitops.store.reader import open_store, read_blob

from ..serving_helpers import png, running_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def uploads() -> list[bytes]:
    return [png(image) for image in load_idx_dir(BUNDLED_MNIST).test_images[:400]]


def workers_of(url: str) -> list[psutil.Process]:
    """The uvicorn worker processes of the service listening at `url`."""
    port = url.rsplit(":", 1)[1]
    (server,) = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "serve" in (p.info["cmdline"] or []) and port in (p.info["cmdline"] or [])
    ]
    return [c for c in server.children() if "spawn_main" in " ".join(c.cmdline())]


def stored(store: Path) -> dict[str, dict]:
    """Every record in the store by request id; fails on any line that is not whole."""
    records = {}
    for segment in sorted(store.glob("records/*/*.jsonl")):
        for line in segment.read_text().splitlines():
            record = json.loads(line)  # a half record would raise here
            records[record["request_id"]] = record
    return records


@contextmanager
def two_workers(trained, work: Path, store: str) -> Iterator[tuple[str, httpx.Client]]:
    """A 2-worker `digitops serve` keeping its predictions in `store`, and a client for it."""
    serve = ("--workers", "2", "--store", store)
    with (
        running_service(trained.model_dir, work, *serve) as url,
        httpx.Client(base_url=url) as client,
    ):
        yield url, client


def assert_images_whole(store: Path, records: dict[str, dict], ids: list) -> None:
    """Each acknowledged record's image is in the store, whole: it decodes to its hash."""
    backend = open_store(str(store))
    for rid in filter(None, ids):
        image = image_from_bytes(read_blob(backend, records[rid]["image_at"]))
        assert image_hash(image) == records[rid]["image"]


def failures(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    found = re.findall(r'^digitops_store_failures_total\{reason="\w+"\} (\S+)', text, re.M)
    return sum(float(v) for v in found)


def test_killing_a_worker_mid_load_loses_no_acknowledged_record(tmp_path, trained, uploads):
    store = tmp_path / "store"
    with running_service(
        trained.model_dir, tmp_path, "--workers", "2", "--store", str(store)
    ) as url:
        victim = workers_of(url)[0]
        answered: list[str] = []
        statuses: list[int] = []
        killed = threading.Event()

        def post(i: int) -> None:
            try:
                response = httpx.post(f"{url}/predict", files={"file": ("d.png", uploads[i])})
            except httpx.TransportError:
                return  # in flight on the killed worker: never acknowledged
            statuses.append(response.status_code)
            if response.status_code == 200:
                answered.append(response.json()["request_id"])
                if len(answered) == 100 and not killed.is_set():
                    killed.set()
                    os.kill(victim.pid, signal.SIGKILL)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(post, range(400)))
        assert killed.is_set() and not victim.is_running()
    assert set(statuses) == {200}
    records = stored(store)
    assert len(answered) > 300 and set(answered) <= set(records)
    assert_images_whole(store, records, answered)


@pytest.fixture
def disk(tmp_path: Path):
    """A small tmpfs of our own: a disk that can really fill up or turn read-only."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mount)])
    if done.returncode != 0:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_read_only_store_keeps_predictions_flowing(disk: Path, trained, uploads):
    store = disk / "store"
    with two_workers(trained, disk.parent, str(store)) as (url, client):
        kept = [client.post("/predict", files={"file": ("d.png", u)}).json() for u in uploads[:10]]
        assert all(a["request_id"] for a in kept)
        before = snapshot(store)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        try:
            answers = [
                client.post("/predict", files={"file": ("d.png", u)}) for u in uploads[10:40]
            ]
            assert {a.status_code for a in answers} == {200}
            assert all(a.json()["request_id"] is None and a.json()["digit"] for a in answers)
            assert failures(url) == 30
            label = {"request_id": kept[0]["request_id"], "digit": "7"}
            refused = client.post("/feedback", json=label)
            assert refused.status_code == 503 and "error" in refused.json()
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        assert snapshot(store) == before  # nothing already stored changed
        time.sleep(PAUSE_S + 0.5)  # the pause after a failure runs out
        back = client.post("/predict", files={"file": ("d.png", uploads[40])}).json()
        assert back["request_id"] in stored(store)


def test_a_full_disk_keeps_predictions_flowing_and_leaves_no_half_record(
    disk: Path, trained, uploads
):
    store = disk / "store"
    with two_workers(trained, disk.parent, str(store)) as (url, client):
        answers = [client.post("/predict", files={"file": ("d.png", u)}) for u in uploads[:150]]
        assert {a.status_code for a in answers} == {200}
        ids = [a.json()["request_id"] for a in answers]
        assert failures(url) == ids.count(None) > 0  # the disk filled up
    records = stored(store)
    assert {i for i in ids if i} <= set(records)
    assert_images_whole(store, records, ids)


def test_a_store_path_that_cannot_be_made_is_exit_code_2(tmp_path: Path, trained):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    serve = [sys.executable, "-m", "digitops.cli", "serve", "--model", str(trained.model_dir)]
    done = subprocess.run(
        [*serve, "--store", str(blocker / "store"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert (
        done.stderr.startswith("error: ") and "cannot be used as the request store" in done.stderr
    )
    assert "Traceback" not in done.stderr and blocker.read_text() == "keep me"


def test_store_commands_refuse_what_is_not_a_store_with_exit_code_2(tmp_path: Path):
    from ..integration.test_cli import run_cli

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"\xff\xd8\xff not really")
    for command in (
        ("store", "accuracy", "--store", str(photos)),
        ("features", "apply", "--store", str(photos), "--repo", str(tmp_path / "repo")),
        ("store", "accuracy", "--store", str(tmp_path / "nowhere")),
    ):
        done = run_cli(*command, cwd=tmp_path)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert [p.name for p in photos.iterdir()] == ["cat.jpg"]
    assert not (tmp_path / "nowhere").exists()


def test_the_store_cap_stops_new_records_and_shows_in_metrics(
    tmp_path: Path, trained, uploads, monkeypatch: pytest.MonkeyPatch
):
    store = tmp_path / "store"
    cap = ("--store", str(store), "--store-cap", str(20_000 / 2**30))  # about 20 kB
    # A metrics directory inherited from the parent (importing Feast sets one): one worker
    # must still report its own values.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "inherited-metrics"))
    with running_service(trained.model_dir, tmp_path, *cap) as url, httpx.Client() as client:
        ids = [
            client.post(f"{url}/predict", files={"file": ("d.png", u)}).json()["request_id"]
            for u in uploads[:40]
        ]
        text = client.get(f"{url}/metrics").text
    assert ids[0] is not None and ids[-1] is None  # kept until the cap, then not
    full = re.search(r'^digitops_store_failures_total\{reason="full"\} (\S+)', text, re.M)
    assert full and float(full.group(1)) >= 1
    assert set(filter(None, ids)) <= set(stored(store))  # nothing deleted


def test_an_unreachable_bucket_keeps_predictions_flowing(tmp_path: Path, trained, uploads):
    from ..serving_helpers import aws_env, running_moto, s3_client

    with ExitStack() as bucket, pytest.MonkeyPatch.context() as env:
        endpoint = bucket.enter_context(running_moto(tmp_path))
        s3_client(endpoint).create_bucket(Bucket="digits")
        for name, value in aws_env(endpoint).items():
            env.setenv(name, value)
        serve = ("--workers", "2", "--store", "s3://digits/store/")
        with running_service(trained.model_dir, tmp_path, *serve) as url, httpx.Client() as client:
            assert client.post(f"{url}/predict", files={"file": ("d.png", uploads[0])}).json()[
                "request_id"
            ]
            bucket.close()  # the S3 server goes away
            started = time.monotonic()
            answers = [
                client.post(f"{url}/predict", files={"file": ("d.png", u)}) for u in uploads[1:21]
            ]
            elapsed = time.monotonic() - started
            assert {a.status_code for a in answers} == {200}
            assert all(a.json()["request_id"] is None for a in answers)
            assert failures(url) == 20
    assert elapsed < 20  # at most one connection timeout per worker, then the pause
