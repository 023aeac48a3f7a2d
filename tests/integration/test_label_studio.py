"""The labeling loop against a real Label Studio 1.23 server (its own environment,
tools/label-studio/.venv; SQLite and local files, on 127.0.0.1) and a real 2-worker service:
select → push with pre-annotations → a person annotates through Label Studio's API → pull →
the labels are in the store and `prepare` trains on them; the service as ML backend; and what
is refused, with nothing half done."""

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from digitops.data.dataset import load_dataset
from digitops.data.idx import BUNDLED_MNIST, load_idx_dir
from digitops.labeling.tasks import image_png
from digitops.store.layout import image_from_bytes, image_hash
from digitops.store.reader import labels_in_force, open_store, read_blob, read_lines

from ..conftest import REPO
from ..serving_helpers import png, running_server, running_service
from ..unit.store.test_store import files_digest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LABEL_STUDIO = REPO / "tools" / "label-studio" / ".venv" / "bin" / "label-studio"
ADMIN, ANNOTATOR, PASSWORD = "admin@example.com", "annotator@example.com", "digitops-test-1"
IMAGES = 40


def person_token(url: str, email: str, signup: bool = False) -> str:
    """A personal access token, made as a person makes one: log in (or sign up) through the
    web form, then ask for a token (Account & Settings → Personal Access Token)."""
    with httpx.Client(base_url=url, timeout=60) as browser:
        page = "/user/signup/" if signup else "/user/login/"
        browser.get(page)
        form = {"csrfmiddlewaretoken": browser.cookies["csrftoken"], "email": email}
        answer = browser.post(page, data=form | {"password": PASSWORD}, headers={"Referer": url})
        assert answer.status_code == 302, answer.text[:500]
        headers = {"X-CSRFToken": browser.cookies["csrftoken"], "Referer": url}
        made = browser.post("/api/token/", headers=headers)
        assert made.status_code == 201, made.text
        return str(made.json()["token"])


class Person:
    """Someone using Label Studio's API with their personal access token."""

    def __init__(self, url: str, token: str) -> None:
        access = httpx.post(f"{url}/api/token/refresh/", json={"refresh": token}).json()["access"]
        self.http = httpx.Client(
            base_url=url, timeout=60, headers={"Authorization": f"Bearer {access}"}
        )

    def tasks(self, project: int) -> list[dict]:
        answer = self.http.get("/api/tasks", params={"project": project, "fields": "all"})
        return list(answer.json()["tasks"])

    def annotate(self, task: int, digit: str, cancel: bool = False) -> dict:
        region = {"from_name": "digit", "to_name": "image", "type": "choices"}
        result = [] if cancel else [region | {"value": {"choices": [digit]}}]
        body = {"result": result, "was_cancelled": cancel, "lead_time": 2.5}
        answer = self.http.post(f"/api/tasks/{task}/annotations/", json=body)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A fresh Label Studio with an admin and an annotator, each with a personal access token."""
    if not LABEL_STUDIO.is_file():
        pytest.fail("Label Studio is missing: `make test` installs it (tools/label-studio)")
    work = tmp_path_factory.mktemp("label-studio")
    files = work / "files"
    files.mkdir()
    env = {
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files),
        # The service is on 127.0.0.1 too: Label Studio refuses an ML backend (and the webhook
        # it makes for it) on a loopback or private address unless told otherwise.
        "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
        "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
        "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
        # Label Studio 1.23 makes a random secret key per data directory and, for about 1 key in
        # 50 (those starting with "$"), reads it back empty: tokens then fail. A fixed key.
        "SECRET_KEY": hashlib.sha256(str(work).encode()).hexdigest(),
    }

    def argv(port: int) -> list[str]:
        return [
            str(LABEL_STUDIO), "start", "--no-browser", "--internal-host", "127.0.0.1",
            "--port", str(port), "--data-dir", str(work / "data"),
            "--username", ADMIN, "--password", PASSWORD,
        ]  # fmt: skip

    with running_server("label-studio", argv, "/health", work, env, timeout_s=300) as url:
        yield {
            "url": url,
            "files": files,
            "admin": person_token(url, ADMIN),
            "annotator": person_token(url, ANNOTATOR, signup=True),
            "work": work,
        }


@pytest.fixture(scope="module")
def production(studio, trained, tmp_path_factory) -> Iterator[dict]:
    """A 2-worker service that knows the Label Studio server, and 40 MNIST test digits it
    answered (kept in its store)."""
    work = tmp_path_factory.mktemp("labeling")
    store = work / "store"
    env = {"LABEL_STUDIO_URL": studio["url"], "LABEL_STUDIO_API_KEY": studio["admin"]}
    idx = load_idx_dir(BUNDLED_MNIST)
    serve = ("--workers", "2", "--store", str(store))
    with (
        running_service(trained.model_dir, work, *serve, env=env) as url,
        httpx.Client(base_url=url) as client,
    ):
        truth = {}
        for image, label in zip(idx.test_images[:IMAGES], idx.test_labels, strict=False):
            answer = client.post("/predict", files={"file": ("d.png", png(image), "image/png")})
            truth[answer.json()["request_id"]] = str(label)
        yield {"url": url, "store": store, "truth": truth, "work": work}


def digitops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "digitops.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | (env or {}),
    )


def studio_env(studio: dict, key: str = "admin") -> dict[str, str]:
    return {
        "LABEL_STUDIO_URL": studio["url"],
        "LABEL_STUDIO_API_KEY": studio[key],
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(studio["files"]),
    }


def label_files(store: Path) -> dict[str, str]:
    return files_digest(store / "labels")


def project_of(studio: dict, title: str) -> int:
    person = Person(studio["url"], studio["admin"])
    projects = person.http.get("/api/projects", params={"title": title}).json()["results"]
    return int(next(p["id"] for p in projects if p["title"] == title))


def test_select_push_annotate_pull_and_train(studio, production, trained, tmp_path):
    store, truth = production["store"], production["truth"]
    env = studio_env(studio)
    model = ("--model", str(trained.model_dir))

    picked = digitops("select", "--store", str(store), "--budget", "12", *model)
    assert picked.returncode == 0, picked.stderr
    batch = json.loads(max((store / "queue").glob("*.json")).read_text())
    assert len(batch["items"]) == 12

    pushed = digitops("labels", "push", "--store", str(store), env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert re.search(r"\b12 tasks imported", pushed.stdout), pushed.stdout
    again = digitops("labels", "push", "--store", str(store), env=env)
    assert again.returncode == 0, again.stderr
    assert re.search(r"\b0 tasks imported .*\(12 there already\)", again.stdout), again.stdout

    admin = Person(studio["url"], studio["admin"])
    project = project_of(studio, "digitops digits")
    tasks = admin.tasks(project)
    assert sorted(t["data"]["request_id"] for t in tasks) == sorted(
        i["request_id"] for i in batch["items"]
    )
    backend = open_store(str(store))
    by_request = {item["request_id"]: item for item in batch["items"]}
    for task in tasks:
        item = by_request[task["data"]["request_id"]]
        (pre,) = task["predictions"]  # the model's answer, with its confidence as score
        assert pre["result"][0]["value"]["choices"] == [item["predicted"]]
        assert pre["score"] == pytest.approx(item["confidence"], abs=1e-5)
        assert pre["model_version"] == f"{batch['model_name']}/{batch['model_version']}"
        shown = admin.http.get(task["data"]["image"])  # what the person sees, served by LS
        stored = image_from_bytes(read_blob(backend, item["image_at"]))
        assert shown.status_code == 200 and shown.content == image_png(stored)

    # A person annotates 10 tasks (the true digit), skips one and leaves one.
    annotator = Person(studio["url"], studio["annotator"])
    for task in tasks[:10]:
        annotator.annotate(task["id"], truth[task["data"]["request_id"]])
    annotator.annotate(tasks[10]["id"], "", cancel=True)
    before = label_files(store)

    pulled = digitops("labels", "pull", "--store", str(store), env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert re.search(r"\b10 labels kept", pulled.stdout), pulled.stdout
    labels = labels_in_force(read_lines(backend, "labels/"))
    assert len(labels) == 10 and len(label_files(store)) > len(before)
    for task in tasks[:10]:
        entry = labels[task["data"]["request_id"]]
        assert entry["label"] == truth[entry["request_id"]]
        assert entry["source"] == "label-studio" and entry["annotator"] == ANNOTATOR
        assert entry["labeled_at"] <= entry["time"]

    kept = label_files(store)
    twice = digitops("labels", "pull", "--store", str(store), env=env)
    assert twice.returncode == 0 and re.search(r"\b0 labels kept", twice.stdout)
    assert re.search(r"\b10 pulled before", twice.stdout) and label_files(store) == kept
    # The same server under another name is the same server: still nothing new.
    other_name = env | {"LABEL_STUDIO_URL": studio["url"].replace("127.0.0.1", "localhost")}
    thrice = digitops("labels", "pull", "--store", str(store), env=other_name)
    assert re.search(r"\b0 labels kept", thrice.stdout) and label_files(store) == kept

    # The person changes their mind about one digit: the next pull replaces that label.
    changed = tasks[0]
    (annotation,) = next(t for t in admin.tasks(project) if t["id"] == changed["id"])["annotations"]
    other = str((int(truth[changed["data"]["request_id"]]) + 1) % 10)
    region = annotation["result"][0] | {"value": {"choices": [other]}}
    patched = annotator.http.patch(
        f"/api/annotations/{annotation['id']}/", json={"result": [region]}
    )
    assert patched.status_code == 200, patched.text
    third = digitops("labels", "pull", "--store", str(store), env=env)
    assert re.search(r"\b1 labels kept", third.stdout), third.stdout + third.stderr
    latest = labels_in_force(read_lines(backend, "labels/"))[changed["data"]["request_id"]]
    assert latest["label"] == other and latest["replaces"] == truth[latest["request_id"]]

    # An annotation deleted in Label Studio: its label stays (labels are never deleted), counted.
    (deleted,) = next(t for t in admin.tasks(project) if t["id"] == tasks[1]["id"])["annotations"]
    assert admin.http.delete(f"/api/annotations/{deleted['id']}/").status_code == 204
    kept = label_files(store)
    fourth = digitops("labels", "pull", "--store", str(store), env=env)
    assert re.search(r"\b0 labels kept.*\b1 labels whose annotation is gone", fourth.stdout)
    assert label_files(store) == kept

    # The labeled images go straight into a dataset (and, with MNIST mixed in, to training).
    out = tmp_path / "dataset"
    prepared = digitops("prepare", "--source", str(store), "--out", str(out))
    assert prepared.returncode == 0, prepared.stderr
    data = load_dataset(out)
    seen = {}
    for name in ("train", "val", "test"):
        split = data.split(name)
        for image, label in zip(split.images, split.labels, strict=True):
            seen[image_hash(image)] = data.class_names[label]
    in_force = labels_in_force(read_lines(backend, "labels/")).values()
    expected = {entry["image"]: entry["label"] for entry in in_force}
    assert seen == expected and len(seen) == 10


def test_the_service_is_label_studios_ml_backend(studio, production):
    env = studio_env(studio)
    connected = digitops("labels", "connect", "--service", production["url"], env=env)
    assert connected.returncode == 0, connected.stderr
    admin = Person(studio["url"], studio["admin"])
    project = project_of(studio, "digitops digits")
    (backend,) = admin.http.get("/api/ml", params={"project": project}).json()
    assert backend["state"] == "CO", backend  # connected: /health and /setup answered

    # A new task, made in Label Studio by a person (an image file, no stored request).
    idx = load_idx_dir(BUNDLED_MNIST)
    image, label = idx.test_images[500], str(idx.test_labels[500])
    folder = studio["files"] / "digitops" / "manual"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "new.png").write_bytes(png(image))
    task = {"data": {"image": "/data/local-files/?d=digitops/manual/new.png"}}
    made = admin.http.post(f"/api/projects/{project}/import", json=[task])
    assert made.status_code == 201, made.text
    new = max(t["id"] for t in admin.tasks(project))
    asked = admin.http.post(
        "/api/dm/actions",
        params={"id": "retrieve_tasks_predictions", "project": project},
        json={"selectedItems": {"all": False, "included": [new]}},
    )
    assert asked.status_code == 200, asked.text
    (task,) = [t for t in admin.tasks(project) if t["id"] == new]
    (pre,) = task["predictions"]
    assert pre["result"][0]["value"]["choices"] == [label]
    assert pre["model_version"] == backend["model_version"] and pre["score"] > 0.5


def test_a_label_studio_down_or_refusing_the_key_is_exit_2(studio, production):
    store = str(production["store"])
    for env, message in [
        (studio_env(studio) | {"LABEL_STUDIO_URL": "http://127.0.0.1:9"}, "cannot reach Label"),
        (studio_env(studio) | {"LABEL_STUDIO_API_KEY": "not-a-token"}, "refused the API key"),
        (studio_env(studio) | {"LABEL_STUDIO_API_KEY": "a.b.c"}, "refused the API key"),
        (studio_env(studio) | {"LABEL_STUDIO_API_KEY": ""}, "no Label Studio API key"),
    ]:
        for command in ("push", "pull"):
            done = digitops("labels", command, "--store", store, env=env)
            assert done.returncode == 2, done.stderr
            assert message in done.stderr and "Traceback" not in done.stderr
            assert len(done.stderr.strip().splitlines()) == 1


def test_bad_annotations_and_lost_images_leave_nothing_half_done(studio, production, trained):
    store = production["store"]
    env = studio_env(studio)
    title = ("--project", "digitops errors")
    model = ("--model", str(trained.model_dir))
    assert digitops("select", "--store", str(store), "--budget", "4", *model).returncode == 0

    # An image gone from the store: the push refuses, Label Studio gets no task.
    copy = production["work"] / "store-copy"
    subprocess.run(["cp", "-a", str(store), str(copy)], check=True)
    for pack in copy.glob("blobs/*/*.pack"):
        pack.write_bytes(b"")
    lost = digitops("labels", "push", "--store", str(copy), *title, env=env)
    assert lost.returncode == 2 and "is gone or unreadable" in lost.stderr, lost.stderr
    admin = Person(studio["url"], studio["admin"])
    projects = admin.http.get("/api/projects", params={"title": "digitops errors"}).json()
    assert projects["results"] == []  # the images are read before Label Studio is touched

    pushed = digitops("labels", "push", "--store", str(store), *title, env=env)
    assert re.search(r"\b4 tasks imported", pushed.stdout), pushed.stderr
    project = project_of(studio, "digitops errors")
    tasks = admin.tasks(project)
    annotator = Person(studio["url"], studio["annotator"])
    truth = production["truth"]
    for task in tasks[:3]:
        annotator.annotate(task["id"], truth[task["data"]["request_id"]])
    annotator.annotate(tasks[3]["id"], "X")  # Label Studio keeps a choice outside the config
    before = label_files(store)
    bad = digitops("labels", "pull", "--store", str(store), *title, env=env)
    assert bad.returncode == 2 and f"task {tasks[3]['id']}" in bad.stderr
    assert "'X', not one of the classes" in bad.stderr and "nothing was pulled" in bad.stderr
    assert label_files(store) == before

    # A task naming a request the store does not hold (another store's, or one moved away).
    assert admin.http.delete(f"/api/tasks/{tasks[3]['id']}/").status_code == 204
    ghost = {
        "data": {"image": tasks[0]["data"]["image"], "request_id": "20200101T000000-0badc0de-0"}
    }
    admin.http.post(f"/api/projects/{project}/import", json=[ghost])
    (new,) = [t for t in admin.tasks(project) if t["data"]["request_id"].startswith("2020")]
    annotator.annotate(new["id"], "3")
    gone = digitops("labels", "pull", "--store", str(store), *title, env=env)
    assert gone.returncode == 2 and "no prediction with request id" in gone.stderr
    assert label_files(store) == before
