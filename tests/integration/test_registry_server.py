"""register → gate → promote → rollback against a real `mlflow server` on localhost, over HTTP."""

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from digitops import registry
from digitops.config import RegistryConfig, TrackingConfig
from digitops.stages import evaluate, prepare, train
from digitops.stages import register as register_stage

from ..conftest import make_config
from ..serving_helpers import chromium_page, running_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "digit-classifier"
DIGITOPS = [sys.executable, "-m", "digitops.cli"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """`mlflow server` with a SQLite store and a local artifact store, stopped after the tests."""
    root = tmp_path_factory.mktemp("mlflow-server")
    mlflow = [
        *(str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1"),
        *("--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"),
        *("--artifacts-destination", str(root / "artifacts"), "--workers", "1"),
    ]
    with running_server(
        "mlflow", lambda port: [*mlflow, "--port", str(port)], "/health", root
    ) as url:
        yield url


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, trained, mnist_slice: Path):
    """A good model and a deliberately bad one (one epoch of two batches), both evaluated on the
    same test split."""
    work = tmp_path_factory.mktemp("models")
    tiny = work / "tiny-dataset"
    prepare.run(make_config(work, "prepare.limit=256"), tiny)
    bad = train.run(make_config(work, "train.epochs=1", "train.batch_size=128"), tiny, work / "bad")
    evaluations = {}
    for name, model_dir in {"good": trained.model_dir, "bad": bad.model_dir}.items():
        out = work / f"evaluation-{name}"
        evaluate.run(make_config(work, "tracking.enabled=false"), model_dir, mnist_slice, out)
        evaluations[name] = (model_dir, out)
    return evaluations


def cli(server: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": server}
    return subprocess.run(
        [*DIGITOPS, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def register(server: str, cwd: Path, model: tuple[Path, Path], *extra: str):
    model_dir, evaluation = model
    return cli(
        server,
        cwd,
        *("register", "--model", str(model_dir), "--evaluation", str(evaluation)),
        *("--set", "registry.accuracy_threshold=0.8", "--set", "registry.quality_rules=false"),
        *extra,
    )


def test_register_gate_promote_rollback_over_http(server: str, models, tmp_path: Path):
    client = MlflowClient(tracking_uri=server, registry_uri=server)

    first = register(server, tmp_path, models["good"])
    assert first.returncode == 0, first.stderr
    assert "gate_passed: True" in first.stdout and "promote --version 1" in first.stdout
    version = client.get_model_version(MODEL, "1")
    assert version.aliases == ["candidate"]
    assert version.tags["gate"] == "passed"
    assert {"dataset_version", "test_accuracy", "source_commit", "mlflow_run_id"} <= set(
        version.tags
    )
    assert len(version.tags["source_commit"]) == 40

    promoted = cli(server, tmp_path, "promote", "--version", "1")
    assert promoted.returncode == 0, promoted.stderr
    assert client.get_model_version_by_alias(MODEL, "production").version == "1"

    # The bad model fails the gate, gets no alias, and cannot be promoted by hand either.
    worse = register(server, tmp_path, models["bad"])
    assert worse.returncode == 0, worse.stderr
    bad_version = client.get_model_version(MODEL, "2")
    assert bad_version.aliases == [] and bad_version.tags["gate"] == "failed"
    assert "< threshold" in bad_version.tags["gate_reasons"]
    assert "regresses from production version 1" in bad_version.tags["gate_reasons"]
    refused = cli(server, tmp_path, "promote", "--version", "2")
    assert refused.returncode == 2 and "did not pass the gate" in refused.stderr
    assert client.get_model_version_by_alias(MODEL, "production").version == "1"

    # With the threshold out of the way, the regression rule alone still stops it.
    again = register(server, tmp_path, models["bad"], "--set", "registry.accuracy_threshold=0")
    assert "regresses from production" in again.stdout
    assert client.get_model_version(MODEL, "3").aliases == []

    # A good model with auto approval goes straight to production; rollback returns to 1.
    auto = register(server, tmp_path, models["good"], "--approval", "auto")
    assert auto.returncode == 0, auto.stderr
    assert client.get_model_version_by_alias(MODEL, "production").version == "4"
    rolled = cli(server, tmp_path, "rollback")
    assert rolled.returncode == 0 and "from version 4 to 1" in rolled.stdout
    assert client.get_model_version_by_alias(MODEL, "production").version == "1"
    # Rolled back out of production, version 4 is no candidate either (a monitor would
    # otherwise promote it again on the labels it earned there).
    assert "candidate" not in client.get_model_version(MODEL, "4").aliases

    history = registry.history(client, MODEL)
    assert [(h["version"], h["action"]) for h in history] == [
        (1, "promote"),
        (4, "auto-approved"),
        (1, "rollback"),
    ]
    nothing_left = cli(server, tmp_path, "rollback")
    assert nothing_left.returncode == 2 and "nothing to roll back to" in nothing_left.stderr


def test_the_model_card_renders_in_mlflows_artifact_view(server: str, models, tmp_path: Path):
    """Every version gets a card, a refused one too; MLflow's UI shows it (headless chromium)."""
    refused = register(server, tmp_path, models["bad"])
    assert refused.returncode == 0, refused.stderr
    client = MlflowClient(tracking_uri=server, registry_uri=server)
    version = max(client.search_model_versions(f"name='{MODEL}'"), key=lambda v: int(v.version))
    uri = version.tags["model_card"]
    assert uri.startswith(f"runs:/{version.run_id}/model-card/v{version.version}/")
    run = client.get_run(version.run_id)
    path = uri.removeprefix(f"runs:/{version.run_id}/")
    url = f"{server}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/artifacts/{path}"
    with chromium_page(url) as page:
        card = page.frame_locator("iframe")
        heading = card.locator("h1")
        heading.wait_for(timeout=30_000)
        assert heading.inner_text() == f"Model card: {MODEL} version {version.version}"
        assert "The gate failed." in card.locator("body").inner_text()
        assert card.locator("td", has_text="FAIL").count() >= 1
        assert card.locator("img").count() == 2  # confusion matrix, calibration curve


def test_a_card_directory_it_may_not_replace_is_refused_before_registering(
    server: str, models, tmp_path: Path
):
    client = MlflowClient(tracking_uri=server, registry_uri=server)
    before = len(client.search_model_versions(f"name='{MODEL}'"))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("a user's file")
    refused = register(server, tmp_path, models["good"], "--card-out", str(tmp_path / "notes"))
    assert refused.returncode == 2 and "not an earlier output" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert len(client.search_model_versions(f"name='{MODEL}'")) == before
    assert (tmp_path / "notes" / "mine.txt").read_text() == "a user's file"


def test_registered_model_loads_back_as_onnx(server: str, models):
    import mlflow.onnx

    mlflow.set_tracking_uri(server)
    client = MlflowClient(tracking_uri=server, registry_uri=server)
    if not client.search_model_versions(f"name='{MODEL}'"):
        pytest.skip("runs after the registry test, which registers the versions")
    model = mlflow.onnx.load_model(f"models:/{MODEL}/1")
    assert [i.name for i in model.graph.input] == ["image"]


def _mover(server: str, model: str, role: int, rounds: int, barrier, results) -> None:
    """One of two processes racing: each round both wait at the barrier, then move `production`
    at once (a promotion against a promotion or a rollback); records what succeeded."""
    cfg = RegistryConfig(model_name=model, regression_tolerance=1.0)
    tracking = TrackingConfig(uri=server)
    done = []
    for round_ in range(rounds):
        barrier.wait(timeout=120)
        try:
            if role == 1 and round_ % 2 == 0:
                registry.rollback(cfg, tracking)
                done.append("rollback")
            else:
                registry.promote(cfg, tracking, (round_ + role) % 3 + 1)
                done.append("promote")
        except registry.RegistryError:
            done.append("refused")
    results.put((role, done))


def test_concurrent_promotions_and_rollbacks_lose_no_move(server: str, models, tmp_path: Path):
    model = "race-classifier"
    for _ in range(3):
        done = register(server, tmp_path, models["good"], "--set", f"registry.model_name={model}")
        assert done.returncode == 0 and "gate_passed: True" in done.stdout, done.stderr
    client = MlflowClient(tracking_uri=server, registry_uri=server)
    cfg, tracking = RegistryConfig(model_name=model), TrackingConfig(uri=server)
    registry.promote(cfg, tracking, 1)

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    movers = [
        context.Process(target=_mover, args=(server, model, role, 20, barrier, results))
        for role in (0, 1)
    ]
    for mover in movers:
        mover.start()
    outcomes = dict(results.get(timeout=600) for _ in movers)
    for mover in movers:
        mover.join(timeout=60)
    moves = sum(o != "refused" for done in outcomes.values() for o in done)
    assert moves >= 10, outcomes  # the race was real: rounds moved the alias

    history = registry.history(client, model)
    assert len(history) == 1 + moves, "every move is in the history, once"
    production = client.get_model_version_by_alias(model, "production").version
    assert registry.production_stack(history)[-1] == int(production)
    assert model + registry.LOCK_SUFFIX not in {m.name for m in client.search_registered_models()}


def test_a_service_on_the_production_alias_follows_promote_and_rollback(
    server: str, models, tmp_path: Path
):
    import httpx

    from ..serving_helpers import running_service

    model = "follow-classifier"
    for _ in range(2):
        done = register(server, tmp_path, models["good"], "--set", f"registry.model_name={model}")
        assert done.returncode == 0, done.stderr
    cfg, tracking = RegistryConfig(model_name=model), TrackingConfig(uri=server)
    registry.promote(cfg, tracking, 1)

    def served(url: str) -> str:
        return httpx.get(f"{url}/model").json()["version"]

    os.environ["DIGITOPS_MODEL_REFRESH_S"] = "0.5"  # the service inherits the environment
    os.environ["MLFLOW_TRACKING_URI"] = server
    try:
        with running_service(f"models:/{model}@production", tmp_path, "--workers", "2") as url:
            assert served(url) == "1"
            registry.promote(cfg, tracking, 2)
            assert _eventually(lambda: {served(url) for _ in range(6)} == {"2"})
            registry.rollback(cfg, tracking)
            assert _eventually(lambda: {served(url) for _ in range(6)} == {"1"})
    finally:
        del os.environ["DIGITOPS_MODEL_REFRESH_S"], os.environ["MLFLOW_TRACKING_URI"]


def _eventually(check, timeout_s: float = 30.0) -> bool:
    """Whether `check()` becomes true within `timeout_s` (asked every quarter second)."""
    from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

    waits = Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(0.25),
        retry=retry_if_result(lambda ok: not ok),
    )
    try:
        return bool(waits(check))
    except RetryError:
        return False


def test_only_a_version_that_went_to_production_is_deployed(server: str, models, tmp_path: Path):
    """register's answer to the pipeline (deploy or not): with manual approval a version that
    passed is only the candidate, and nothing is deployed; with auto it is production."""
    model_dir, evaluation = models["good"]
    results = {}
    for approval in ("manual", "auto"):
        config = make_config(
            tmp_path,
            "registry.model_name=approval-classifier",
            "registry.accuracy_threshold=0.8",
            "registry.quality_rules=false",
            f"registry.approval={approval}",
            f"tracking.uri={server}",
        )
        results[approval] = register_stage.run(config, model_dir, evaluation)
    assert results["manual"].gate_passed and not results["manual"].in_production
    assert results["auto"].gate_passed and results["auto"].in_production
