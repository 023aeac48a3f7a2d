"""The import contracts of pyproject.toml ([tool.importlinter]) hold for the package, and each one
fails when a single import breaks it (checked on a copy of the package)."""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTRACTS = {
    contract["id"]: contract["name"]
    for contract in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
}


def lint_imports(root: Path, *contracts: str) -> tuple[int, str]:
    """Run import-linter with root/pyproject.toml on the package under root/src: (exit, output)."""
    argv = [Path(sys.executable).parent / "lint-imports", "--no-cache", "--no-logo"]
    argv += [arg for contract in contracts for arg in ("--contract", contract)]
    # PYTHONPATH comes before the editable install: the package under root/src is the one checked.
    # COLUMNS: wide enough that no contract name or import chain is wrapped.
    env = os.environ | {"PYTHONPATH": str(root / "src"), "COLUMNS": "400"}
    done = subprocess.run(
        [*map(str, argv), str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def test_the_package_keeps_every_import_contract():
    code, output = lint_imports(REPO)
    assert code == 0, output
    for name in CONTRACTS.values():
        assert f"{name} KEPT" in output


@pytest.mark.parametrize(
    ("contract", "module", "line", "reported"),
    [
        pytest.param(
            "stages-independent",
            "stages/evaluate.py",
            "from digitops.stages import train",
            "digitops.stages.evaluate -> digitops.stages.train",
            id="a-stage-imports-another",
        ),
        pytest.param(
            "serving-stays-light",
            "serving/app.py",
            "import torch",
            "digitops.serving.app -> torch",
            id="serving-imports-torch",
        ),
        pytest.param(
            "serving-stays-light",
            "serving/preprocess.py",
            "from digitops.data import augment",
            "digitops.data.augment -> albumentations",  # the chain's last link
            id="serving-imports-albumentations-through-digitops",
        ),
        pytest.param(
            "serving-needs-no-cli",
            "serving/predictor.py",
            "import yaml",
            "digitops.serving.predictor -> yaml",
            id="serving-imports-yaml",
        ),
        pytest.param(
            "layers",
            "data/idx.py",
            "from digitops.stages import prepare",
            "digitops.data.idx -> digitops.stages.prepare",
            id="a-building-block-imports-a-stage",
        ),
        pytest.param(
            "layers",
            "serving/main.py",
            "from digitops.pipeline import dag",
            "digitops.serving.main -> digitops.pipeline.dag",
            id="one-face-imports-another",
        ),
        pytest.param(
            "layers",
            "errors.py",
            "from digitops import config",
            "digitops.errors -> digitops.config",
            id="the-bottom-layer-imports-upward",
        ),
        pytest.param(
            "layers",
            "helpers.py",
            "",
            "digitops.helpers",
            id="a-module-outside-every-layer",
        ),
    ],
)
def test_one_import_breaks_the_contract(tmp_path, contract, module, line, reported):
    shutil.copy2(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    package = tmp_path / "src" / "digitops"
    shutil.copytree(
        REPO / "src" / "digitops", package, ignore=shutil.ignore_patterns("__pycache__", "mnist")
    )
    code, output = lint_imports(tmp_path, contract)
    assert code == 0, output  # the copy keeps it, until...

    path = package / module
    text = path.read_text() if path.exists() else '"""A new module."""\n'
    path.write_text(f"{text}\n{line}\n")
    code, output = lint_imports(tmp_path, contract)
    assert code != 0
    assert f"{CONTRACTS[contract]} BROKEN" in output, output
    assert reported in output, output
