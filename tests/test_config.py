"""slifmr/config.py: configuration files, overrides, value checks and their errors."""

import glob
import os

import pytest

from slifmr.cli import main
from slifmr.config import Config, ConfigError, load_config, parse_override


def test_config_files(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("model: lightgcn\nepochs: 7\nmodalities: [text]\n")
    cfg = load_config(str(y), {"epochs": 9})
    assert cfg.model == "lightgcn" and cfg.epochs == 9 and cfg.modalities == ["text"]
    assert cfg.resolved().use_kg is False and cfg.resolved().sc_weight == 0.0
    j = tmp_path / "c.json"
    j.write_text('{"lr": 0.5}')
    assert load_config(str(j)).lr == 0.5
    y.write_text("epochs: 3\nbogus: 1\n")
    with pytest.raises(ValueError, match=r"c.yaml:2: unknown configuration key 'bogus'"):
        load_config(str(y))
    y.write_text("epochs: [1\n")
    with pytest.raises(ValueError, match=r"c.yaml:\d+: invalid YAML"):
        load_config(str(y))
    with pytest.raises(ValueError, match=r"config key 'epochs': expected an integer in \[1, "):
        load_config(None, {"epochs": 0})
    with pytest.raises(ValueError, match="feedback_in"):
        Config(feedback_in=["kg", "x"])
    y.write_text("epochs: 3\nbogus: 1\n")
    assert main(["train", "--output", str(tmp_path / "o"), "--config", str(y)]) == 2


def test_repository_configs_load():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = glob.glob(os.path.join(root, "configs", "*.yaml"))
    assert files
    for f in files:
        load_config(f)


def test_set_values_are_parsed_by_key_type():
    assert parse_override("reorder=none") == ("reorder", "none")
    assert parse_override("feedback_init=none") == ("feedback_init", "none")
    assert parse_override("modalities=none") == ("modalities", None)
    assert parse_override("modalities=image,text") == ("modalities", ["image", "text"])
    assert parse_override("eval_ks=10,20") == ("eval_ks", [10, 20])
    assert parse_override("lr=1e-3") == ("lr", 0.001)
    assert parse_override("lr=1") == ("lr", 1.0)
    assert parse_override("use_kg=false") == ("use_kg", False)
    assert load_config(None, {"reorder": "none"}).reorder == "none"


def test_config_error_is_a_value_error():
    """Library callers that caught ValueError keep working; the CLI catches ConfigError."""
    with pytest.raises(ConfigError, match="config key 'lr'"):
        load_config(None, {"lr": float("nan")})
    assert issubclass(ConfigError, ValueError)
