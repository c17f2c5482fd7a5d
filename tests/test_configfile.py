"""YAML config files for `flare-train bc` and `flare-train ppo`: known keys load, anything else is named."""
from __future__ import annotations

import pytest
from flare_training.bc import BCConfig
from flare_training.ppo import PPOConfig


def test_yaml_configs_load_and_name_bad_keys(tmp_path):
    good = tmp_path / "ppo.yaml"
    good.write_text("task: pickup\nlr: 3.0e-4\n")
    cfg = PPOConfig.from_yaml(good)
    assert (cfg.task, cfg.lr, cfg.epochs) == ("pickup", 3e-4, 4)  # unspecified keys keep the defaults
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 1.0e-4\nlearning_rate: 1.0e-4\n")
    with pytest.raises(ValueError, match=r"unknown PPO options \['learning_rate'\]"):
        PPOConfig.from_yaml(bad)
    with pytest.raises(ValueError, match="unknown BC options"):
        BCConfig.from_yaml(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- lr\n")
    with pytest.raises(ValueError, match="expected a mapping of BC options"):
        BCConfig.from_yaml(listy)
