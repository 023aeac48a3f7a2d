"""The closed loop, measured: accuracy on a shifted stream before and after one loop, the labels
it used, and the wall time from the first drifted request to the promotion, on this machine.

    .venv/bin/python benchmarks/closed_loop.py [--epochs 3] [--retrain-epochs 5]
        [--mnist-ratio 10] [--labels 150] [--out F]

A base model is trained on all of MNIST (`--epochs`, no search), registered and put in
production; `digitops serve` answers with it, keeps a request store and gives half its clients
to the `candidate` as a canary, following both aliases every second. The stream then turns to
printed digits photographed (`digitops.data.printed`): `--stream` requests from 200 clients.
`digitops monitor` runs as users would run it (the CLI): it alerts on drift; `--labels` of the
requests are labeled (`POST /feedback/batch`); the monitor retrains (the compiled pipeline on
the KFP local runner: `--mnist-ratio` MNIST images per labeled request, `--retrain-epochs`, no
search); the new version is the
canary; `--canary` more requests are answered and labeled; the monitor promotes it.

The baseline is the production model before the loop, measured in the same run on the same
held-out stream (`--test` photos no request used): accuracy before and after, and the error
ratio. Prints JSON: machine, versions, accuracies, labels, each step's wall time, and the
monitor's decisions with their reasons.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import httpx
import numpy as np
import yaml
from tenacity import retry, stop_after_delay, wait_fixed

from digitops.data.printed import photographs
from digitops.net import free_port, wait_for_url
from digitops.serving.predictor import load_predictor
from digitops.serving.preprocess import ImageError, preprocess

ROOT = Path(__file__).resolve().parents[1]
MODEL = "digit-classifier"
GATE, TOLERANCE = 0.97, 0.02


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="of the base model")
    parser.add_argument("--retrain-epochs", type=int, default=5, help="of the retrain")
    parser.add_argument(
        "--mnist-ratio", type=float, default=10.0, help="MNIST images per labeled one (retrain)"
    )
    parser.add_argument("--stream", type=int, default=600, help="shifted requests before labels")
    parser.add_argument("--labels", type=int, default=150, help="of them labeled for the retrain")
    parser.add_argument("--canary", type=int, default=400, help="requests while in canary")
    parser.add_argument("--test", type=int, default=2000, help="held-out shifted photos")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="closed-loop-"))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    settings = {
        "monitor": {
            "retrain_labels": min(100, args.labels),
            "rollout_labels": 100,
            "retrain": {
                "tune_trials": 0,
                "epochs": args.retrain_epochs,
                "mnist_ratio": args.mnist_ratio,
                "accuracy_threshold": GATE,
                "regression_tolerance": TOLERANCE,
            },
        },
        # A short training run reaches about 99 %, under the default gate's 99.5 %; the retrain
        # is judged on a test split with printed digits in it, against MNIST-only production.
        # The quality rules are for the default model; the loop's short runs are judged on
        # accuracy, regression and drift.
        "registry": {
            "accuracy_threshold": GATE,
            "regression_tolerance": TOLERANCE,
            "quality_rules": False,
        },
        "tracking": {"uri": uri},
    }
    (work / "loop.yaml").write_text(yaml.safe_dump(settings))
    steps: dict[str, float] = {}
    started = time.perf_counter()
    base = _cli(work, "prepare", "--out", "dataset")
    base += _cli(
        work,
        "train",
        "--data",
        "dataset",
        "--out",
        "model",
        "--set",
        f"train.epochs={args.epochs}",
        "--set",
        "train.progress=false",
    )
    base += _cli(work, "evaluate", "--data", "dataset", "--model", "model", "--out", "evaluation")
    base += _cli(
        work,
        "register",
        "--model",
        "model",
        "--evaluation",
        "evaluation",
        "--set",
        "registry.approval=auto",
    )
    steps["base_model_s"] = time.perf_counter() - started

    test_photos, test_truth = photographs(args.test, seed=10_000)
    before = _accuracy(f"models:/{MODEL}/1", test_photos, test_truth)
    port = free_port()
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "digitops.cli",
            "serve",
            "--port",
            str(port),
            "--store",
            "store",
            "--model",
            f"models:/{MODEL}@production",
            "--challenger",
            f"models:/{MODEL}@candidate",
            "--rollout",
            "canary",
            "--canary-share",
            "0.5",
        ],
        cwd=work,
        env=os.environ | {"DIGITOPS_MODEL_REFRESH_S": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    decisions = []
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_url(f"{url}/ready", 120, alive=lambda: serve.poll() is None)
        http = httpx.Client(base_url=url, timeout=60)
        loop_started = time.perf_counter()
        photos, truth = photographs(args.stream, seed=1)
        answers = _send(http, photos, [f"user-{i % 200}" for i in range(len(photos))])
        decisions.append(_monitor(work))
        steps["drifted_stream_s"] = time.perf_counter() - loop_started
        _label(http, answers[: args.labels], truth[: args.labels])
        mark = time.perf_counter()
        decisions.append(_monitor(work))
        steps["retrain_s"] = time.perf_counter() - mark
        version_two = _wait_for_canary(http)
        mark = time.perf_counter()
        photos, truth = photographs(args.canary, seed=2)
        answers = _send(http, photos, [f"user-{i % 200}" for i in range(len(photos))])
        _label(http, answers, truth)
        decisions.append(_monitor(work))
        steps["canary_s"] = time.perf_counter() - mark
        promoted_at = time.perf_counter()
        serving = http.get("/model").json()["version"]
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    after = _accuracy(f"models:/{MODEL}/{version_two}", test_photos, test_truth)
    result = {
        "benchmark": "closed_loop",
        "date": time.strftime("%Y-%m-%d"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "python": platform.python_version(),
        "versions": {
            name: version(name) for name in ("mlflow", "kfp", "evidently", "torch", "onnxruntime")
        },
        "settings": vars(args) | {"out": str(args.out) if args.out else None, "gate": GATE},
        "held_out_photos": args.test,
        "accuracy_before": before,
        "accuracy_after": after,
        "error_ratio_after_vs_before": (1 - after) / (1 - before),
        "labels_for_retraining": args.labels,
        "labels_for_the_canary": sum(1 for a in answers if a),
        "promoted_version": version_two,
        "serving_after": serving,
        "wall_s_first_drifted_request_to_promotion": promoted_at - loop_started,
        "steps_s": steps,
        "monitor": decisions,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


def _cli(work: Path, *argv: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "digitops.cli", *argv, "--config", "loop.yaml"],
        cwd=work,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"digitops {' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout.splitlines()


def _monitor(work: Path) -> dict:
    argv = [
        "monitor",
        "--store",
        "store",
        "--data",
        "dataset",
        "--pipeline",
        str(ROOT / "pipelines" / "digits.yaml"),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "digitops.cli", *argv, "--config", "loop.yaml"],
        cwd=work,
        capture_output=True,
        text=True,
    )
    latest = json.loads((work / "artifacts" / "monitor" / "monitor.json").read_text())
    return {
        "exit": done.returncode,
        "decision": latest["decision"],
        "rollout": latest["rollout"],
        "retrain": latest["retrain"],
        "failures": latest["failures"],
    }


def _send(http: httpx.Client, photos: list[bytes], clients: list[str]) -> list[dict]:
    answers = []
    for photo, who in zip(photos, clients, strict=True):
        answer = http.post(
            "/predict",
            json={"image": base64.b64encode(photo).decode()},
            headers={"X-Client-Id": who},
        )
        answers.append(answer.json() if answer.status_code == 200 else {})
    return answers


def _label(http: httpx.Client, answers: list[dict], truth: np.ndarray) -> None:
    labels = [
        {"request_id": a["request_id"], "digit": str(t), "source": "benchmark"}
        for a, t in zip(answers, truth, strict=True)
        if a
    ]
    for start in range(0, len(labels), 200):
        http.post(
            "/feedback/batch", json={"labels": labels[start : start + 200]}
        ).raise_for_status()


@retry(stop=stop_after_delay(60), wait=wait_fixed(0.5), reraise=True)
def _wait_for_canary(http: httpx.Client) -> str:
    challenger = http.get("/model").json()["challenger"]
    assert challenger is not None, "no canary yet"
    return str(challenger["version"])


def _accuracy(model: str, photos: list[bytes], truth: np.ndarray) -> float:
    """Accuracy of `model` on the photos the service would accept, through its preprocessing."""
    predictor = load_predictor(model)
    kept, images = [], []
    for photo, digit in zip(photos, truth, strict=True):
        try:
            images.append(preprocess(photo))
        except ImageError:
            continue
        kept.append(str(digit))
    answers = predictor.predict(np.stack(images))
    return sum(a.digit == t for a, t in zip(answers, kept, strict=True)) / len(kept)


if __name__ == "__main__":
    main()
