"""The checked-in KFP YAML is a fresh compile and loads back with kfp."""

from pathlib import Path

import pytest
import yaml
from kfp import components

from digitops.config import Config, value_at, with_values
from digitops.pipeline.components import DEFAULT_IMAGE, STANDALONE
from digitops.pipeline.parameters import PARAMETERS
from digitops.pipeline.runner import compile_all

REPO = Path(__file__).resolve().parents[3]
COMPILED = sorted([REPO / "pipelines" / "digits.yaml", *(REPO / "components").glob("*.yaml")])


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compiled")
    compile_all(out / "pipelines", out / "components")
    return out


@pytest.mark.parametrize("path", COMPILED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_checked_in_yaml_is_up_to_date(path: Path, fresh: Path):
    current = (fresh / path.parent.name / path.name).read_text()
    assert path.read_text() == current, "stale: run `digitops pipeline compile` and commit"


def test_every_component_is_checked_in(fresh: Path):
    names = {p.name for p in (fresh / "components").iterdir()}
    assert names == {p.name for p in (REPO / "components").glob("*.yaml")}


@pytest.mark.parametrize("path", COMPILED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_compiled_yaml_loads_back(path: Path):
    loaded = components.load_component_from_file(str(path))
    assert loaded.component_spec.inputs


def test_pipeline_wires_stages_with_resources_retries_and_caching():
    spec, platform = yaml.safe_load_all((REPO / "pipelines" / "digits.yaml").read_text())
    tasks = spec["root"]["dag"]["tasks"]
    gate = tasks.pop("condition-1")
    assert set(tasks) == {"prepare", "tune", "train", "evaluate", "explain", "drift", "register"}
    assert tasks["tune"]["dependentTasks"] == ["prepare"]
    assert sorted(tasks["train"]["dependentTasks"]) == ["prepare", "tune"]
    assert sorted(tasks["evaluate"]["dependentTasks"]) == ["prepare", "train"]
    assert sorted(tasks["explain"]["dependentTasks"]) == ["evaluate", "prepare", "train"]
    assert sorted(tasks["drift"]["dependentTasks"]) == ["prepare", "train"]
    # register judges every trained model (the gate is decided there, once), and its model
    # card shows explain's attributions ...
    assert sorted(tasks["register"]["dependentTasks"]) == ["drift", "evaluate", "explain", "train"]
    # ... and deploy runs only for a version that passed it (dsl.If on register's output).
    assert gate["taskInfo"]["name"] == "in-production"
    assert "register-Output" in gate["triggerPolicy"]["condition"]
    assert "deploy" in spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert "evaluate-Output" not in yaml.safe_dump(spec), "evaluate decides nothing"
    deploy = spec["components"]["comp-condition-1"]["dag"]["tasks"]["deploy"]
    for name, task in {**tasks, "deploy": deploy}.items():
        # The tasks with effects beyond their outputs always run; the others may be cached.
        cached = name not in ("drift", "register", "deploy")
        assert task.get("cachingOptions", {}).get("enableCache", False) is cached, name
        assert task["retryPolicy"]["maxRetryCount"] == 1
    executors = spec["deploymentSpec"]["executors"]
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == DEFAULT_IMAGE
        assert container["resources"]["cpuLimit"] > 0
        assert container["resources"]["memoryLimit"] > 0
        assert "pip install" not in " ".join(container["command"]), "the image has everything"
    # On Kubernetes every task gets the MLflow login from the (optional) secret.
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(kubernetes) == set(executors)
    for name, executor in kubernetes.items():
        secrets = {secret["secretName"]: secret for secret in executor["secretAsEnv"]}
        # ... and the search the Ray cluster's token (manifests/ray).
        assert (
            set(secrets) == {"mlflow-client", "ray-auth"} if "tune" in name else {"mlflow-client"}
        )
        assert all(secret["optional"] is True for secret in secrets.values())
        assert {e["envVar"] for e in secrets["mlflow-client"]["keyToEnv"]} == {
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
        }


def default_mismatches(params: dict, config: Config) -> list[str]:
    """Compiled parameters whose default differs from the config value they set."""
    return [
        name
        for name, key in PARAMETERS.items()
        if params[name]["defaultValue"] != value_at(config, key)
    ]


def test_pipeline_parameter_defaults_are_the_config_defaults():
    """`Config()` is the only home of defaults: every compiled parameter default equals the
    config value the parameter sets, and every parameter but the drift data and the trigger
    sets one."""
    spec, _ = yaml.safe_load_all((REPO / "pipelines" / "digits.yaml").read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == set(PARAMETERS) | {"current_data", "trigger"}
    assert default_mismatches(params, Config()) == []
    assert params["current_data"]["defaultValue"] == params["trigger"]["defaultValue"] == ""
    # The comparison sees a difference in any one value.
    changed = with_values(Config(), {"train.epochs": 3, "prepare.seed": 7})
    assert default_mismatches(params, changed) == ["prepare_seed", "epochs"]


def test_component_inputs_are_named_as_the_pipeline_parameters_they_carry():
    """Components map their inputs to config keys through the same table (`config_values`), so
    every plain input is a pipeline parameter (or the drift data / the run's name)."""
    for path in sorted((REPO / "components").glob("*.yaml")):
        if path.stem in STANDALONE:  # no pipeline task: its inputs are its own
            continue
        spec = yaml.safe_load(path.read_text())
        inputs = set(spec["root"]["inputDefinitions"].get("parameters", {}))
        assert inputs - {"current_data", "pipeline_run", "trigger"} <= set(PARAMETERS), path.name
