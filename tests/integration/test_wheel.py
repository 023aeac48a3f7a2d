"""digitops as users install it: a wheel built from the repository, installed with the `serve`
and `prepare` extras into a new virtual environment, run from a folder outside the checkout."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from digitops.data.dataset import load_dataset

from ..serving_helpers import png, running_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXTRAS = "serve,prepare"


def run(*argv: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def succeed(*argv: str | Path, cwd: Path, env: dict[str, str]) -> str:
    done = run(*argv, cwd=cwd, env=env)
    assert done.returncode == 0, f"{argv}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder outside the checkout: nothing of the repository is reachable from it."""
    path = tmp_path_factory.mktemp("outside")
    assert not path.resolve().is_relative_to(REPO)
    return path


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    """This environment without what would point a process back at the checkout or its venv."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "DIGITOPS_MNIST_DIR", "MLFLOW_TRACKING_URI"}
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Path:
    """A new virtual environment holding the wheel and its `serve` and `prepare` extras, pinned
    by requirements.lock; returns its bin folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    # The wheel is built from a copy of its sources, so no build/ folder lands in the checkout.
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(
        REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    pip = (sys.executable, "-m", "pip")
    succeed(*pip, "wheel", "--no-deps", "--wheel-dir", tmp / "dist", source, cwd=tmp, env=env)
    (wheel,) = (tmp / "dist").glob("digitops-*.whl")

    # No pip inside: this environment's pip installs into it (--python).
    succeed(sys.executable, "-m", "venv", "--without-pip", tmp / "venv", cwd=tmp, env=env)
    python = tmp / "venv" / "bin" / "python"
    succeed(
        *(*pip, "--python", python, "install", "--quiet"),
        *("-c", REPO / "requirements.lock", f"{wheel}[{EXTRAS}]"),
        cwd=tmp,
        env=env,
    )
    return python.parent


def test_wheel_holds_the_data_and_leaves_the_training_stack_out(venv, outside, env):
    where = (
        "import digitops, digitops.data.idx as idx; "
        "print(digitops.__file__); print(idx.BUNDLED_MNIST); print(sorted(idx.read_checksums("
        "idx.BUNDLED_MNIST)))"
    )
    printed = succeed(venv / "python", "-c", where, cwd=outside, env=env)
    package, mnist, checksums = printed.splitlines()[:3]
    site = venv.parent / "lib"
    assert Path(package).is_relative_to(site) and Path(mnist).is_relative_to(site)
    assert "train-images-idx3-ubyte" in checksums
    for module in ("torch", "lightning", "ray", "captum", "evidently"):
        done = run(venv / "python", "-c", f"import {module}", cwd=outside, env=env)
        assert done.returncode != 0 and "No module named" in done.stderr, module


@pytest.fixture(scope="module")
def prepared(venv, outside, env) -> tuple[Path, str]:
    """`digitops prepare` of the installed wheel on its bundled MNIST: (dataset dir, output)."""
    out = outside / "dataset"
    argv = (venv / "digitops", "prepare", "--limit", "500", "--out", out)
    return out, succeed(*argv, cwd=outside, env=env)


def test_prepare_runs_on_the_bundled_mnist_outside_the_checkout(prepared):
    out, printed = prepared
    assert "prepared dataset" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sizes"]["test"] == 500
    assert manifest["sizes"]["train"] + manifest["sizes"]["val"] == 500
    for name in ("train.npz", "val.npz", "test.npz", "augment.json", "stats.json"):
        assert (out / name).is_file(), name


def test_serve_answers_predictions_outside_the_checkout(venv, outside, env, prepared, trained):
    image = load_dataset(prepared[0]).split("test").images[0]
    serve = [str(venv / "digitops"), "serve", "--model", str(trained.model_dir.resolve())]
    store = str(outside / "store")
    server = running_server(
        "wheel-serve",
        lambda port: [*serve, "--port", str(port), "--store", store],
        "/ready",
        outside,
    )
    with server as url, httpx.Client(base_url=url, timeout=30) as client:  # stops it after
        answer = client.post("/predict", files={"file": ("d.png", png(image))})
        page = client.get("/")  # the static page: package data, read via importlib.resources
    assert answer.status_code == 200, answer.text
    assert answer.json()["digit"] in {str(d) for d in range(10)}
    assert answer.json()["request_id"]  # kept in the store (boto3 not needed for a local one)
    assert page.status_code == 200 and "<html" in page.text.lower()
