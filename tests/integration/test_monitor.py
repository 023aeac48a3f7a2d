"""`digitops monitor` with real parts, where it must not break: an unreadable store, a KFP host
that is down, a webhook that times out (each recorded, named in one line, exit 2, nothing in
the registry moved); a webhook that answers gets a Slack-style JSON body; a service in shadow
mode keeps the challenger's predictions beside the answers, and the monitor reads them."""

import base64
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from digitops.config import load_config
from digitops.data.printed import photographs
from digitops.net import free_port
from digitops.registry import CANDIDATE, PRODUCTION, by_alias, client, history
from digitops.stages import evaluate, register
from digitops.store.reader import open_store, read_lines

from ..serving_helpers import running_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "digit-classifier"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, trained, mnist_slice):  # type: ignore[no-untyped-def]
    """Version 1 in production, version 2 (the same model) the candidate, and a service that
    shadows 2 while answering with 1, with 250 printed-digit requests and 120 labels kept."""
    work = tmp_path_factory.mktemp("monitor")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    settings = {
        # rollout_labels: version 2 stays in its rollout (waiting) through these tests
        "monitor": {
            "min_requests": 200,
            "sample": 400,
            "retrain_labels": 100,
            "rollout_labels": 1000,
        },
        "registry": {
            "accuracy_threshold": 0.5,
            "regression_tolerance": 0.5,
            "quality_rules": False,  # a 4,000-image model: accuracy, regression and drift only
        },
        "tracking": {"uri": uri},
    }
    (work / "monitor.yaml").write_text(yaml.safe_dump(settings))
    config = load_config(work / "monitor.yaml")
    evaluate.run(config, trained.model_dir, mnist_slice, work / "evaluation")
    auto = load_config(work / "monitor.yaml", ["registry.approval=auto"])
    assert register.run(auto, trained.model_dir, work / "evaluation").in_production
    assert register.run(config, trained.model_dir, work / "evaluation").version == 2
    serve = [sys.executable, "-m", "digitops.cli", "serve", "--store", str(work / "store")]
    serve += ["--model", f"models:/{MODEL}@production"]
    serve += ["--challenger", f"models:/{MODEL}@candidate", "--rollout", "shadow"]
    env = {"MLFLOW_TRACKING_URI": uri, "DIGITOPS_MODEL_REFRESH_S": "1"}
    photos, truth = photographs(250, seed=7)
    with (
        running_server("serve", lambda p: [*serve, "--port", str(p)], "/ready", work, env) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        answers = []
        for photo in photos:
            answer = http.post("/predict", json={"image": base64.b64encode(photo).decode()})
            answers.append(answer.json() if answer.status_code == 200 else {})
        labels = [
            {"request_id": a["request_id"], "digit": str(t), "source": "ci"}
            for a, t in zip(answers[:130], truth[:130], strict=True)
            if a
        ]
        assert http.post("/feedback/batch", json={"labels": labels}).status_code == 201
        yield work, mnist_slice, answers, len(labels)


def monitor(work: Path, data: Path, *extra: str, store: str | None = None):  # type: ignore[no-untyped-def]
    argv = [sys.executable, "-m", "digitops.cli", "monitor"]
    argv += ["--store", store or str(work / "store"), "--data", str(data)]
    argv += ["--out", str(work / "out"), "--config", str(work / "monitor.yaml"), *extra]
    done = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=300)
    latest = json.loads((work / "out" / "monitor.json").read_text())
    return done, latest


def registry_state(work: Path) -> tuple:
    mlflow = client(load_config(work / "monitor.yaml").tracking)
    production, candidate = by_alias(mlflow, MODEL, PRODUCTION), by_alias(mlflow, MODEL, CANDIDATE)
    versions = len(mlflow.search_model_versions(f"name='{MODEL}'"))
    return production.number, candidate.number, versions, len(history(mlflow, MODEL))


def test_shadow_predictions_are_kept_but_never_answered(setup):
    work, _, answers, _ = setup
    assert {a["model_version"] for a in answers if a} == {"1"}
    records = read_lines(open_store(str(work / "store")), "records/")
    assert len(records) == sum(1 for a in answers if a)
    assert {r["shadow"]["model_version"] for r in records} == {"2"}
    assert all(r["shadow"]["predicted"] == r["predicted"] for r in records)  # the same model


def test_an_unreadable_store_is_recorded_and_named_in_one_line(setup):
    work, data, _, _ = setup
    before = registry_state(work)
    done, latest = monitor(work, data, store=str(work / "no-such-store"))
    assert done.returncode == 2, done.stderr
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1 and "not a request store" in errors[0], done.stderr
    assert latest["decision"]["action"] == "alert"
    assert latest["decision"]["reasons"][0].startswith("cannot observe:")
    assert registry_state(work) == before


def test_a_webhook_that_times_out_is_named_and_the_decision_kept(setup):
    work, data, _, labeled = setup
    calls: list[dict] = []

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            calls.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            time.sleep(3)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    before = registry_state(work)
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        # Version 2 is the candidate in its shadow rollout: no retrain, an alert on the drift.
        done, latest = monitor(
            work, data, "--webhook", url, "--set", "monitor.webhook_timeout_s=0.5"
        )
    finally:
        server.shutdown()
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == f"error: webhook {url}: no answer within 0.5 s"
    assert latest["decision"]["action"] == "alert", latest
    assert "version 2 is in its rollout" in latest["decision"]["reasons"][-1]
    assert latest["failures"] == [f"webhook {url}: no answer within 0.5 s"]
    (body,) = calls
    assert body["text"].startswith("digitops monitor: alert (descriptors drift")
    assert body["decision"]["action"] == "alert"
    assert body["observation"]["new_labels"] == labeled
    shadow = {t["model_version"]: t for t in body["observation"]["shadow_accuracy"]}
    assert shadow["2"]["labeled"] == labeled
    assert body["observation"]["shadow_agreement"] == {"2": 1.0}
    assert registry_state(work) == before


def test_a_challenger_the_gate_refused_is_rejected_never_promoted(setup):
    work, data, _, labeled = setup
    mlflow = client(load_config(work / "monitor.yaml").tracking)
    mlflow.set_model_version_tag(MODEL, "2", "gate", "failed")
    mlflow.set_model_version_tag(MODEL, "2", "gate_reasons", "test accuracy 0.5 < threshold 0.99")
    # Enough shadowed labels, as accurate as production (the same model): the rule says promote.
    done, latest = monitor(work, data, "--set", f"monitor.rollout_labels={labeled}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert latest["rollout"]["action"] == "reject", latest["rollout"]
    assert (
        "the registry refuses it: version 2 of 'digit-classifier' did not pass the gate"
        in (latest["rollout"]["reason"])
    )
    assert by_alias(mlflow, MODEL, PRODUCTION).number == 1
    assert by_alias(mlflow, MODEL, CANDIDATE) is None
    assert mlflow.get_model_version(MODEL, "2").tags["rollout"] == "rejected"
    assert [(m["version"], m["action"]) for m in history(mlflow, MODEL)] == [
        (1, "auto-approved"),
        (2, "reject"),
    ]


def test_a_kfp_host_that_is_down_starts_nothing_and_moves_nothing(setup):
    work, data, _, _ = setup
    mlflow = client(load_config(work / "monitor.yaml").tracking)
    # No challenger in its rollout (the candidate is production): nothing blocks a retrain.
    mlflow.set_registered_model_alias(MODEL, CANDIDATE, "1")
    before = registry_state(work)
    host = f"http://127.0.0.1:{free_port()}"
    done, latest = monitor(work, data, "--kfp-host", host)
    assert done.returncode == 2, done.stdout + done.stderr
    (error,) = done.stderr.strip().splitlines()
    assert error.startswith(f"error: retrain: {host}: cannot reach the KFP API"), error
    assert "decision: retrain" in done.stdout
    assert latest["decision"]["action"] == "retrain" and latest["retrain"] is None
    assert registry_state(work) == before
