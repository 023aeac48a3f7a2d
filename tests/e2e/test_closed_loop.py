"""The whole production loop on a laptop, every step asserted: a service in production with a
request store; calm traffic (the monitor decides nothing); shifted traffic, printed digits
photographed (it alerts on drift, waiting for labels); labels arrive, and two monitors started
at once start one retrain run of the compiled pipeline on MNIST plus the labeled requests; the
new version passes the gate, becomes the candidate, runs as a canary in the same service,
collects labeled traffic and is promoted by the monitor; the service answers with it; then a
deliberately worse candidate (the MNIST-only model again) is rejected by the monitor on its
canary traffic. The registry's history shows each move with its reason."""

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from tenacity import retry, stop_after_delay, wait_fixed

from digitops.config import load_config
from digitops.data.idx import BUNDLED_MNIST, load_idx_dir
from digitops.data.printed import photographs
from digitops.monitor.run import HISTORY, run_pass
from digitops.registry import CANDIDATE, PRODUCTION, by_alias, client, history
from digitops.stages import evaluate, register, train
from digitops.store.reader import open_store, read_lines

from ..conftest import SHORT_EPOCHS
from ..serving_helpers import png, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MODEL = "digit-classifier"


def settings(work: Path) -> dict:
    """The loop's config: small windows and counts, a quick retrain (no search, 3 epochs)."""
    return {
        "monitor": {
            "min_requests": 200,
            "sample": 600,
            "min_labels": 50,
            "retrain_labels": 100,
            "rollout_labels": 60,
            "cooldown_hours": 6.0,
            "retrain": {
                "mnist_ratio": 30,
                "tune_trials": 0,
                "epochs": 3,
                "accuracy_threshold": 0.5,
                "regression_tolerance": 0.2,
            },
        },
        # Models of a few thousand images: accuracy, regression and drift only
        "registry": {
            "accuracy_threshold": 0.5,
            "regression_tolerance": 0.2,
            "quality_rules": False,
        },
        "train": {"progress": False},
        "tracking": {"uri": f"sqlite:///{work / 'mlflow.db'}"},
    }


class Loop:
    """The service, its store and the monitor's config, and helpers to drive them."""

    def __init__(self, work: Path, url: str, reference: Path) -> None:
        self.work, self.url, self.reference = work, url, reference
        self.config_file = work / "loop.yaml"
        self.config = load_config(self.config_file)
        self.store = str(work / "store")
        self.http = httpx.Client(base_url=url, timeout=30)

    def send(self, photos: list[bytes], clients: list[str]) -> list[dict]:
        """One request per photo, each from its client; the answers the service gave."""
        import base64

        answers = []
        for photo, who in zip(photos, clients, strict=True):
            body = {"image": base64.b64encode(photo).decode()}
            answer = self.http.post("/predict", json=body, headers={"X-Client-Id": who})
            if answer.status_code == 200:
                answers.append(answer.json())
            else:  # a photo whose digit fell off the page: refused, as a real one would be
                assert answer.status_code in (400, 422), answer.text
                answers.append({})
        return answers

    def label(self, answers: list[dict], truth: np.ndarray) -> None:
        labels = [
            {"request_id": a["request_id"], "digit": str(t), "source": "ci"}
            for a, t in zip(answers, truth, strict=True)
            if a
        ]
        for start in range(0, len(labels), 200):
            kept = self.http.post("/feedback/batch", json={"labels": labels[start : start + 200]})
            assert kept.status_code == 201, kept.text

    def monitor(self):  # type: ignore[no-untyped-def]
        return run_pass(
            self.config,
            self.store,
            str(self.reference),
            self.work / "monitor",
            REPO / "pipelines" / "digits.yaml",
            self.work / "pipeline-root",
        )

    def monitor_cli(self) -> subprocess.Popen:
        argv = [sys.executable, "-m", "digitops.cli", "monitor", "--store", self.store]
        argv += ["--data", str(self.reference), "--out", str(self.work / "monitor")]
        argv += ["--pipeline", str(REPO / "pipelines" / "digits.yaml")]
        argv += ["--root", str(self.work / "pipeline-root"), "--config", str(self.config_file)]
        return subprocess.Popen(
            argv, cwd=self.work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def model(self) -> dict:
        return self.http.get("/model").json()

    def wait_for(self, check) -> dict:  # type: ignore[no-untyped-def]
        """/model once `check` holds (the service follows the aliases every second)."""

        @retry(stop=stop_after_delay(60), wait=wait_fixed(0.5), reraise=True)
        def until() -> dict:
            found = self.model()
            assert check(found), found
            return found

        return until()


def accuracy(answers: list[dict], truth: np.ndarray, version: str) -> tuple[int, int]:
    pairs = [(a, t) for a, t in zip(answers, truth, strict=True) if a]
    mine = [(a, t) for a, t in pairs if a["model_version"] == version]
    return sum(a["digit"] == str(t) for a, t in mine), len(mine)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, trained, mnist_slice):  # type: ignore[no-untyped-def]
    """Version 1 (the session's MNIST model) in production, served with a request store and a
    canary slot for the `candidate` (half the clients), following both aliases every second."""
    work = tmp_path_factory.mktemp("closed-loop")
    (work / "loop.yaml").write_text(yaml.safe_dump(settings(work)))
    config = load_config(work / "loop.yaml", ["registry.approval=auto"])
    evaluation = work / "evaluation"
    evaluate.run(config, trained.model_dir, mnist_slice, evaluation)
    first = register.run(config, trained.model_dir, evaluation)
    assert first.in_production
    env = {
        "MLFLOW_TRACKING_URI": config.tracking.uri,
        "DIGITOPS_MODEL_REFRESH_S": "1",
    }
    os.environ["MLFLOW_TRACKING_URI"] = config.tracking.uri  # the pipeline's tasks too
    serve = [sys.executable, "-m", "digitops.cli", "serve", "--store", str(work / "store")]
    serve += ["--model", f"models:/{MODEL}@production"]
    serve += ["--challenger", f"models:/{MODEL}@candidate", "--rollout", "canary"]
    serve += ["--canary-share", "0.5"]
    with running_server(
        "serve", lambda port: [*serve, "--port", str(port)], "/ready", work, env
    ) as url:
        yield Loop(work, url, mnist_slice), first.version
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def test_the_loop_retrains_promotes_and_rolls_back(loop, mnist_slice):
    loop, first = loop
    assert loop.model()["version"] == str(first) and loop.model()["challenger"] is None

    # 1. Calm traffic: MNIST digits as users send them. No retrain, no alert.
    mnist = load_idx_dir(BUNDLED_MNIST)
    picked = np.random.default_rng(0).choice(len(mnist.test_images), 300, replace=False)
    calm = [png(image) for image in mnist.test_images[picked]]
    loop.send(calm, [f"calm-{i}" for i in range(300)])
    calm_pass = loop.monitor()
    assert calm_pass.decision.action == "nothing", calm_pass.lines()
    assert calm_pass.observation.requests == 300
    assert not any(d.drifted for d in calm_pass.observation.drift), calm_pass.observation.drift

    # 2. Shifted traffic: printed digits, photographed. Drift, but no labels yet: an alert.
    photos, truth = photographs(400, seed=1)
    shifted = loop.send(photos, [f"user-{i}" for i in range(400)])
    drifted = loop.monitor()
    assert drifted.decision.action == "alert", drifted.lines()
    kinds = {d.kind for d in drifted.observation.drift if d.drifted}
    assert "descriptors" in kinds and "embeddings" in kinds, drifted.observation.drift
    assert any("0 new labels of 100" in r for r in drifted.decision.reasons), drifted.lines()
    history_lines = (loop.work / "monitor" / HISTORY).read_text().splitlines()
    assert [json.loads(line)["decision"]["action"] for line in history_lines] == [
        "nothing",
        "alert",
    ]
    correct, answered = accuracy(shifted, truth, str(first))
    before = correct / answered

    # 3. Labels arrive for 150 of them; two monitors started at once start one retrain run.
    loop.label(shifted[:150], truth[:150])
    both = [loop.monitor_cli(), loop.monitor_cli()]
    outputs = [process.communicate(timeout=900)[0] for process in both]
    assert all(process.returncode == 0 for process in both), outputs
    ran = [out for out in outputs if "decision: retrain" in out]
    # The other finds the lock held, or (when the first recorded its start before the other
    # decided) the cool-down: either way it starts no run.
    waited = [
        out
        for out in outputs
        if "a retrain run is already running" in out or "cool-down: the last retrain" in out
    ]
    assert len(ran) == 1 and len(waited) == 1, outputs
    assert "retrain: SUCCEEDED" in ran[0] and "gate passed" in ran[0], ran[0]
    mlflow = client(loop.config.tracking)
    candidate = by_alias(mlflow, MODEL, CANDIDATE)
    assert candidate is not None and candidate.number == first + 1
    trigger = json.loads(candidate.tags["trigger"])
    assert trigger["by"] == "digitops monitor"
    assert any("drift" in reason for reason in trigger["reasons"]), trigger
    assert "150 labeled requests" in candidate.tags["production_data"]

    # 4. The candidate runs as a canary: half the clients get it, sticky per client.
    second = str(candidate.number)
    loop.wait_for(lambda m: (m["challenger"] or {}).get("version") == second)
    photos, truth = photographs(400, seed=2)
    clients = [f"user-{i % 200}" for i in range(400)]
    canary = loop.send(photos, clients)
    side = {}
    for answer, who in zip(canary, clients, strict=True):
        if answer:
            assert side.setdefault(who, answer["model_version"]) == answer["model_version"]
    assert 0.3 < sum(v == second for v in side.values()) / len(side) < 0.7
    records = read_lines(open_store(loop.store), "records/")
    assert not any("shadow" in record for record in records)  # a canary shadows nobody
    loop.label(canary, truth)
    promoted = loop.monitor()
    assert promoted.rollout.action == "promote", promoted.lines()
    assert by_alias(mlflow, MODEL, PRODUCTION).number == candidate.number
    now = loop.wait_for(lambda m: m["version"] == second and m["challenger"] is None)
    assert now["version"] == second
    answered_now = loop.send(photos[:20], clients[:20])
    assert {a["model_version"] for a in answered_now if a} == {second}
    correct, answered = accuracy(canary, truth, second)
    assert correct / answered > before, (correct / answered, before)

    # 5. A deliberately worse candidate is rejected on its canary: the session's MNIST model
    # trained again without outlier exposure, which reads grey, speckled photos far worse.
    plain = load_config(
        loop.config_file, [f"train.epochs={SHORT_EPOCHS}", "train.outlier_exposure=0"]
    )
    plain_model = train.run(plain, mnist_slice, loop.work / "plain-model").model_dir
    evaluate.run(plain, plain_model, mnist_slice, loop.work / "plain-evaluation")
    worse = register.run(loop.config, plain_model, loop.work / "plain-evaluation")
    assert worse.gate_passed and worse.version == candidate.number + 1, worse
    third = str(worse.version)
    loop.wait_for(lambda m: (m["challenger"] or {}).get("version") == third)
    photos, truth = photographs(400, seed=3)
    clients = [f"later-{i % 200}" for i in range(400)]
    answers = loop.send(photos, clients)
    loop.label(answers, truth)
    rejected = loop.monitor()
    assert rejected.rollout.action == "reject", rejected.lines()
    assert by_alias(mlflow, MODEL, CANDIDATE) is None
    assert by_alias(mlflow, MODEL, PRODUCTION).number == candidate.number
    loop.wait_for(lambda m: m["version"] == second and m["challenger"] is None)
    tags = mlflow.get_model_version(MODEL, third).tags
    assert tags["rollout"] == "rejected" and "<" in tags["rollout_reason"]

    # 6. The registry's history: every move, with its reason.
    moves = history(mlflow, MODEL)
    assert [(m["version"], m["action"]) for m in moves] == [
        (first, "auto-approved"),
        (candidate.number, "monitor-promote"),
        (worse.version, "reject"),
    ]
    assert ">=" in moves[1]["reason"] and "<" in moves[2]["reason"]
