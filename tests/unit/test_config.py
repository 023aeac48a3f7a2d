from pathlib import Path

import pytest

from digitops.config import Config, apply_params, load_config, parse_override
from digitops.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_without_file():
    assert load_config() == Config()


def test_set_overrides_parse_values_as_yaml():
    cfg = load_config(
        None,
        ["train.epochs=3", "augment.enabled=false", "prepare.classes=[a, b]", "train.lr=0.005"],
    )
    assert cfg.train.epochs == 3 and cfg.augment.enabled is False
    assert cfg.prepare.classes == ["a", "b"] and cfg.train.lr == 0.005


def test_unknown_key_in_set_is_named():
    with pytest.raises(ConfigError, match="unknown key 'train.epochz'"):
        load_config(None, ["train.epochz=3"])


def test_unknown_key_in_file_is_named(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  width: 8\n  depth: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'model.depth'"):
        load_config(path)


def test_invalid_value_names_key():
    with pytest.raises(ConfigError, match="'train.epochs'"):
        load_config(None, ["train.epochs=-1"])


@pytest.mark.parametrize("key", ["drift.num_method", "drift.cat_method"])
def test_method_names_are_checked_up_front(key: str):
    with pytest.raises(ConfigError, match=rf"'{key}'.*wasserstein|'{key}'.*jensenshannon"):
        load_config(None, [f"{key}=bogus"])


def test_set_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["train.epochs"])


def test_missing_and_malformed_files_are_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path: Path):
    load_config(path)


def test_default_config_file_documents_the_built_in_defaults():
    assert load_config(REPO / "configs" / "mnist.yaml") == Config()


def test_search_space_keys_must_be_tunable():
    with pytest.raises(ConfigError, match="'train.epochs' is not a tunable key"):
        load_config(None, ["tune.space={train.epochs: {kind: int, low: 1, high: 9}}"])
    with pytest.raises(ConfigError, match="'model.depth' is not a tunable key"):
        load_config(None, ["tune.start_points=[{model.depth: 3}]"])


@pytest.mark.parametrize(
    ("dim", "message"),
    [
        ("{kind: uniform, low: 0.3, high: 0.1}", "needs 'low' < 'high'"),
        ("{kind: loguniform, low: 0, high: 0.1}", "needs 'low' > 0"),
        ("{kind: choice, values: []}", "non-empty 'values'"),
        ("{kind: normal, low: 0, high: 1}", "tune.space.train.lr.kind"),
    ],
)
def test_malformed_search_dimension_is_named(dim: str, message: str):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"tune.space={{train.lr: {dim}}}"])


def test_apply_params_validates_each_value():
    config = apply_params(Config(), {"train.lr": 0.003, "model.width": 12})
    assert (config.train.lr, config.model.width) == (0.003, 12)
    with pytest.raises(ConfigError, match="'model.dropout'"):
        apply_params(Config(), {"model.dropout": 1.5})
    with pytest.raises(ConfigError, match="'train.seed' is not a tunable key"):
        apply_params(Config(), {"train.seed": 1})


def test_baseline_outside_a_choice_is_refused_before_ray_starts(tmp_path: Path):
    from digitops.stages.tune import _check_baseline

    config = load_config(None, ["model.width=10"])
    with pytest.raises(ConfigError, match=r"model.width=10 is not among"):
        _check_baseline(config)
    _check_baseline(load_config(None, ["model.width=10", "tune.baseline=false"]))


def test_best_params_file_errors_are_one_line(tmp_path: Path):
    from digitops.contracts import BestParams
    from digitops.errors import DataError

    with pytest.raises(DataError, match="not found; it should hold a best-parameters file"):
        BestParams.read(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"something": 1}')
    with pytest.raises(DataError, match="not a best-parameters file"):
        BestParams.read(tmp_path / "bad.json")


def test_one_override_parser_types_values_for_the_cli_and_the_pipeline():
    assert parse_override("train.epochs=3") == ("train.epochs", 3)
    assert parse_override("registry.accuracy_threshold=0.99") == (
        "registry.accuracy_threshold",
        0.99,
    )
    assert parse_override("prepare.source=data/x") == ("prepare.source", "data/x")
    assert parse_override("tracking.uri=") == ("tracking.uri", None)
    with pytest.raises(ConfigError, match="--param 'epochs': expected key=value"):
        parse_override("epochs", flag="--param")


def test_typed_values_win_over_overrides_and_are_validated():
    config = load_config(None, ["train.epochs=3"], {"train.epochs": 5, "prepare.limit": 0})
    assert config.train.epochs == 5 and config.prepare.limit == 0  # 0 = all images
    with pytest.raises(ConfigError, match="'prepare.limit'"):
        load_config(values={"prepare.limit": -1})


def test_an_empty_override_means_the_default_where_empty_has_a_meaning():
    config = load_config(None, ["prepare.limit=", "tracking.uri="])
    assert config.prepare.limit == 0 and config.tracking.uri == ""


def test_a_space_over_the_parameter_budget_is_refused_before_ray_starts():
    from digitops.stages.tune import _check_parameter_budget

    _check_parameter_budget(load_config(None, []), classes=10)  # 6, 7, 8: at most 20,226
    wide = load_config(None, ["tune.space={model.width: {kind: choice, values: [6, 8, 12]}}"])
    over = r"model.width 12 has 45,022 parameters, over tune.max_parameters=25,000; the widest"
    with pytest.raises(ConfigError, match=over + r" that fits is 8 \(20,226\)"):
        _check_parameter_budget(wide, classes=10)
    ranged = load_config(None, ["tune.space={model.width: {kind: int, low: 4, high: 9}}"])
    with pytest.raises(ConfigError, match="model.width 9 has 25,507"):
        _check_parameter_budget(ranged, classes=10)
    start = load_config(None, ["tune.start_points=[{model.width: 10}]"])
    with pytest.raises(ConfigError, match="model.width 10"):
        _check_parameter_budget(start, classes=10)
    unbounded = ["tune.max_parameters=null", "model.width=12", "tune.baseline=false"]
    _check_parameter_budget(load_config(None, unbounded), classes=10)


def test_every_width_of_the_default_space_fits_the_budget():
    from digitops.model.cnn import parameters_at

    widths = Config().tune.space["model.width"].values
    assert max(parameters_at(w, 10) for w in widths) <= Config().tune.max_parameters


def test_the_best_trial_is_the_fastest_within_the_tolerance_of_the_top():
    import pandas as pd

    from digitops.stages.tune import _cheapest_near_top

    trials = pd.DataFrame(
        {
            "trial": ["wide", "narrow", "weak"],
            "val_accuracy": [0.9900, 0.9896, 0.9700],
            "epochs": [4, 4, 1],
            "seconds": [80.0, 40.0, 5.0],
        }
    )
    assert _cheapest_near_top(trials, 0.0005)["trial"] == "narrow"
    assert _cheapest_near_top(trials, 0.0)["trial"] == "wide"


def test_an_empty_ray_address_is_none_given():
    from digitops.config import load_config

    assert load_config(None, ["tune.ray_address="]).tune.ray_address == ""
    assert load_config(values={"tune.ray_address": "ray://head:10001"}).tune.ray_address
