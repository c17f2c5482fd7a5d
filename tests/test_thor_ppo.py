"""FLaRe PPO and evaluation driving AI2-THOR (`--env ai2thor`): a tiny two-camera Stretch bundle trained for two
updates against the real ai2thor Controller and our fake Unity, and a Unity that dies mid-run (clear error, the
last checkpoint kept). Wiring, not simulation: the fake's frames and physics mean nothing."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from flare_policy.bundle import CameraSpec, load_bundle, save_bundle
from flare_policy.model import PolicyNet
from flare_policy.model.config import tiny
from flare_training.envs.thor import ThorControllerError
from flare_training.evaluate import evaluate
from flare_training.ppo import PPOConfig, build_parser, checkpoint_files, latest_checkpoint, train
from thor_fixtures import SCENARIO, fake_build, make_data

CAMERAS = ("raw_navigation_camera", "raw_manipulation_camera")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    torch.set_num_threads(1)


def stretch_bundle(path: Path) -> Path:
    """The `tiny` preset with both Stretch cameras at 24x40 (overrides only) and FLaRe's 20 actions."""
    torch.manual_seed(0)
    cfg = tiny(n_actions=20, cameras=CAMERAS, image_size=(24, 40), d_model=32, visual_dim=16, fusion_heads=2,
               fusion_ff=64, decoder_heads=2, decoder_ff_multiple_of=32)
    cams = [CameraSpec(name, resize=(24, 42), crop=(24, 40)) for name in CAMERAS]
    return save_bundle(path, PolicyNet(cfg), embodiment="stretch", cameras=cams, text_encoder={"kind": "minilm"})


def thor_config(tmp_path: Path, scenario: dict) -> Path:
    specs, houses = make_data(tmp_path / "data", "objectnav")
    exe, _ = fake_build(tmp_path / "build", scenario)
    cfg = tmp_path / "thor.yaml"
    # small raw frames (84x48 -> 82x48 after the 1 px crop per side) keep the pipe traffic low
    cfg.write_text(yaml.safe_dump({"task_specs": str(specs), "houses": str(houses), "executable": str(exe),
                                   "width": 84, "height": 48, "server_timeout": 3, "max_steps": 6}))
    return cfg


def test_ppo_and_eval_run_a_two_camera_bundle_in_thor(tmp_path):
    bundle = stretch_bundle(tmp_path / "bundle")
    cfg = PPOConfig(init=str(bundle), task="objectnav", env="ai2thor", env_config=str(thor_config(tmp_path, SCENARIO)),
                    n_envs=2, rollout=8, total_steps=32, epochs=2, critic_warmup_steps=16, threads=1,
                    logdir=str(tmp_path / "run"), checkpoint_every=1, progress=False, eval_every=2,
                    eval_episodes=2, eval_envs=1)
    s = train(cfg)
    assert s["updates"] == 2 and s["global_step"] == 32
    assert math.isfinite(s["last"]["losses/policy_loss"]) and math.isfinite(s["last"]["losses/value_loss"])
    assert s["last"]["consistency/max_abs_dlogp"] < 1e-4  # rollout and update agree on two-camera input
    assert [e["global_step"] for e in s["evals"]] == [0, 32]
    out = load_bundle(s["bundle"])
    assert out.embodiment.name == "stretch" and [c.name for c in out.cameras] == list(CAMERAS)
    assert len(checkpoint_files(cfg.logdir)) == 2
    records = [json.loads(line) for line in (Path(cfg.logdir) / "metrics.jsonl").read_text().splitlines()]
    assert any("charts/episodes" in r for r in records)  # max_steps 6 < rollout 8: episodes ended and reset
    # the evaluation CLI path on the trained bundle (val split)
    r = evaluate(out, "objectnav", 2, n_envs=2, env="ai2thor", env_config=cfg.env_config, progress=False)
    assert r["episodes"] == 2 and all(ep["expert_length"] == 3 for ep in r["per_episode"])
    with pytest.raises(ValueError, match="--env ai2thor needs --env-config"):
        evaluate(out, "objectnav", 1, env="ai2thor", progress=False)
    help_text = build_parser().format_help()
    assert "--env ENV" in help_text and "--env-config ENV_CONFIG" in help_text


def test_unity_dying_mid_run_stops_ppo_and_keeps_the_last_checkpoint(tmp_path):
    bundle = stretch_bundle(tmp_path / "bundle")
    # each fake Unity dies on its 9th move: inside the second rollout (8 steps per rollout and env)
    scenario = dict(SCENARIO, die_after=9, exit_code=1)
    cfg = PPOConfig(init=str(bundle), task="objectnav", env="ai2thor", env_config=str(thor_config(tmp_path, scenario)),
                    n_envs=2, rollout=8, total_steps=64, epochs=1, critic_warmup_steps=0, threads=1,
                    logdir=str(tmp_path / "run"), checkpoint_every=1, progress=False)
    with pytest.raises(ThorControllerError, match=r"exited with code 1.*checkpoints already written are kept"):
        train(cfg)
    found = latest_checkpoint(cfg.logdir, verbose=False)
    assert found is not None and found[1]["update"] == 1
    assert [p.name for p in checkpoint_files(cfg.logdir)] == ["ckpt_0000001.pt"]
