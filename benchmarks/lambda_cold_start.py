"""Lambda cold start: time from a fresh interpreter to the handler's first answer (Python start +
imports + model load + one prediction), and the installed size of the handler's dependencies.

    .venv/bin/python benchmarks/lambda_cold_start.py [--model artifacts/model] [--runs 5]

The function's package is made as `docker/lambda.Dockerfile` makes it: `pip install --target` of
digitops with its `lambda` extra (pinned by requirements.lock) and `docker/requirements-lambda.txt`,
`docker/prune-site-packages.sh`, byte-compiled (Lambda's file system is read-only, so nothing is
compiled at start-up), plus the model. The baseline, in the same run, is a plain `pip install
--target` of the same requirements, neither pruned nor compiled. Each start is a new
interpreter with only the standard library and the package on its path (`python -S`), answering
an HTTP event (Function URL) and an S3 event (a moto S3 server on 127.0.0.1). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.serving_helpers import (  # noqa: E402  (the same event shapes as the tests)
    aws_env,
    function_url_event,
    png,
    running_moto,
    s3_client,
    s3_event,
)

CHILD = """
import json, sys, time
started = time.perf_counter()
from digitops.serving.aws_lambda import handler
imported = time.perf_counter()
answer = handler(json.load(open(sys.argv[1])), None)
answered = time.perf_counter()
print(json.dumps({"end": time.time(), "import_s": imported - started,
                  "first_event_s": answered - imported, "answer": answer}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "model")
    parser.add_argument("--runs", type=int, default=5, help="cold starts per package and event")
    args = parser.parse_args()
    if not (args.model / "model.onnx").is_file():
        raise SystemExit(f"no model at {args.model}: run `digitops train` first")

    work = Path(tempfile.mkdtemp(prefix="digitops-lambda-bench-"))
    try:
        wheel = _wheel(work)
        packages = {
            "lean": _lean_package(work / "lean", wheel),
            "plain": _plain_package(work / "plain", wheel),
        }
        for package in packages.values():
            _add_function(package["path"], args.model)
        with running_moto(work) as endpoint:
            events = _events(work, endpoint)
            results = {
                name: {
                    "dependencies_mb": package["dependencies_mb"],
                    **{
                        event: _cold_starts(package["path"], path, endpoint, args.runs)
                        for event, path in events.items()
                    },
                }
                for name, package in packages.items()
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(_report(results, args), indent=2))


def _lean_package(path: Path, wheel: Path) -> dict:
    deps = path / "deps"
    _install(deps, wheel)
    shutil.rmtree(deps / "digitops" / "data" / "mnist")  # package data the function never reads
    subprocess.run(["sh", str(ROOT / "docker/prune-site-packages.sh"), str(deps)], check=True)
    subprocess.run([_python(), "-m", "compileall", "-q", "-j0", str(deps)], check=True)
    return {"path": path, "dependencies_mb": _mb(deps)}


def _plain_package(path: Path, wheel: Path) -> dict:
    deps = path / "deps"
    _install(deps, wheel, "--no-compile")
    return {"path": path, "dependencies_mb": _mb(deps)}


def _install(deps: Path, wheel: Path, *options: str) -> None:
    """digitops's `lambda` extra and the runtime interface client, pinned as the image pins them."""
    _pip(
        *("--target", str(deps), *options, "-c", str(ROOT / "requirements.lock")),
        *(f"{wheel}[lambda]", "-r", str(ROOT / "docker/requirements-lambda.txt")),
    )


def _wheel(work: Path) -> Path:
    """digitops's wheel, built from a copy of the sources (no build folder in the checkout)."""
    source = work / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__py*", "*.egg*"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    done = subprocess.run(
        [_python(), "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(work), str(source)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"pip wheel failed:\n{done.stderr}")
    return next(work.glob("digitops-*.whl"))


def _add_function(path: Path, model: Path) -> None:
    """The model beside the function's package (digitops is installed in it); `task` is the
    function's working directory, as Lambda's /var/task."""
    (path / "task").mkdir()
    (path / "model").mkdir()
    for name in ("model.onnx", "model.json"):
        shutil.copy(model / name, path / "model" / name)


def _events(work: Path, endpoint: str) -> dict[str, Path]:
    from digitops.data.idx import BUNDLED_MNIST, load_idx_dir

    image = png(load_idx_dir(BUNDLED_MNIST).test_images[0])
    s3 = s3_client(endpoint)
    s3.create_bucket(Bucket="bench")
    s3.put_object(Bucket="bench", Key="uploads/digit.png", Body=image)
    events = {
        "http": function_url_event("POST", "/predict", *_multipart(image)),
        "s3": s3_event("bench", "uploads/digit.png", len(image)),
    }
    paths = {}
    for name, event in events.items():
        paths[name] = work / f"{name}-event.json"
        paths[name].write_text(json.dumps(event))
    return paths


def _cold_starts(path: Path, event: Path, endpoint: str, runs: int) -> dict:
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": f"{path / 'task'}:{path / 'deps'}",
        "PYTHONDONTWRITEBYTECODE": "1",  # as on Lambda's read-only file system
        "DIGITOPS_MODEL": str(path / "model"),
        **aws_env(endpoint),
    }
    samples = []
    for _ in range(runs):
        started = time.time()
        out = subprocess.run(
            [_python(), "-S", "-c", CHILD, str(event)],
            env=env,
            cwd=path / "task",
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise SystemExit(f"the cold start failed:\n{out.stderr}")
        child = json.loads(out.stdout.strip().splitlines()[-1])
        _check(child["answer"])
        samples.append({**child, "total_s": child["end"] - started})
    return {
        metric: round(statistics.median(s[metric] for s in samples), 3)
        for metric in ("total_s", "import_s", "first_event_s")
    }


def _check(answer: dict) -> None:
    """A cold start only counts when it answered with a prediction."""
    if "results" in answer:
        assert "digit" in answer["results"][0], answer
    else:
        assert answer["statusCode"] == 200 and "digit" in json.loads(answer["body"]), answer


def _report(results: dict, args: argparse.Namespace) -> dict:
    lean, plain = results["lean"], results["plain"]
    return {
        "benchmark": "lambda_cold_start",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "python": platform.python_version(),
        "runs": args.runs,
        "results": results,
        "ratios": {
            "dependencies_plain_over_lean": round(
                plain["dependencies_mb"] / lean["dependencies_mb"], 2
            ),
            **{
                f"{event}_cold_start_plain_over_lean": round(
                    plain[event]["total_s"] / lean[event]["total_s"], 2
                )
                for event in ("http", "s3")
            },
        },
    }


def _multipart(image: bytes) -> tuple[bytes, str]:
    import httpx

    request = httpx.Request("POST", "http://x/predict", files={"file": ("d.png", image)})
    return request.read(), request.headers["content-type"]


def _pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", *args], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"pip install failed:\n{done.stderr}")


def _python() -> str:
    """The interpreter without this virtual environment's packages (`-S` drops site-packages)."""
    return getattr(sys, "_base_executable", sys.executable)


def _mb(path: Path) -> float:
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return round(size / 2**20, 1)


if __name__ == "__main__":
    main()
