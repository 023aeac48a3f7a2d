"""Shared fixtures: small, real inputs built once per session from the bundled MNIST."""

from __future__ import annotations

from pathlib import Path

import pytest

from digitops.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
SLICE = 4000
SHORT_EPOCHS = 4


def make_config(tmp: Path, *overrides: str) -> Config:
    """Config whose MLflow store lives under `tmp` (never the developer's ./mlflow.db)."""
    return load_config(
        None, [f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}", "train.progress=false", *overrides]
    )


@pytest.fixture(scope="session")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="session")
def mnist_slice(work: Path) -> Path:
    """A prepared dataset of a few thousand MNIST images."""
    from digitops.stages import prepare

    out = work / "dataset"
    prepare.run(make_config(work, f"prepare.limit={SLICE}"), out)
    return out


@pytest.fixture(scope="session")
def trained(work: Path, mnist_slice: Path):  # type: ignore[no-untyped-def]
    """A model trained for a few short epochs on the slice, tracked in the session's MLflow."""
    from digitops.stages import train

    return train.run(make_config(work, f"train.epochs={SHORT_EPOCHS}"), mnist_slice, work / "model")
