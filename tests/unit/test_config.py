from pathlib import Path

import pytest

from digitops.config import Config, load_config
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


def test_set_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="section.key=value"):
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
