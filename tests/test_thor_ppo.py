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

from flare_policy.bundle import CameraSpec, flare_camera, load_bundle, save_bundle
from flare_policy.model import PolicyNet
from flare_policy.model.config import tiny
from flare_policy.vision import random_dinov2
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


def thor_config(tmp_path: Path, scenario: dict, width: int = 84, height: int = 48) -> Path:
    specs, houses = make_data(tmp_path / "data", "objectnav")
    exe, _ = fake_build(tmp_path / "build", scenario)
    cfg = tmp_path / "thor.yaml"
    # small raw frames (84x48 -> 82x48 after the 1 px crop per side) keep the pipe traffic low
    cfg.write_text(yaml.safe_dump({"task_specs": str(specs), "houses": str(houses), "executable": str(exe),
                                   "width": width, "height": height, "server_timeout": 3, "max_steps": 6}))
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


def dinov2_bundle(path: Path, dino_dir: Path, cameras=None) -> Path:
    """FLaRe's layout at toy width: frozen DINOv2 features (a random 1-block ViT of width 32) of both 224x384
    cameras (FLaRe's crop-and-stretch included), the tiny fusion/decoder, FLaRe's 20 actions."""
    torch.manual_seed(0)
    cfg = tiny(n_actions=20, cameras=CAMERAS, vision="dinov2", visual_dim=32, visual_grid=(7, 12),
               image_size=(224, 384), visual_goal_film=False, d_model=32, fusion_heads=2, fusion_ff=64,
               decoder_heads=2, decoder_ff_multiple_of=32)
    cams = cameras or [flare_camera(name) for name in CAMERAS]
    return save_bundle(path, PolicyNet(cfg), embodiment="stretch", cameras=cams, text_encoder={"kind": "minilm"},
                       vision_encoder={"kind": "dinov2", "path": str(dino_dir)})


def test_ppo_fine_tunes_a_dinov2_bundle_in_thor(tmp_path, capsys):
    """A bundle that reads DINOv2 features (as converted FLaRe checkpoints do): PPO computes each frame's
    features once, while collecting, and the update reuses them (first-epoch log-probs equal the rollout's)."""
    dino = random_dinov2(tmp_path / "dinov2", hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    bundle = dinov2_bundle(tmp_path / "bundle", tmp_path / "elsewhere")  # its recorded path does not exist
    thor = thor_config(tmp_path, SCENARIO, width=396, height=224)  # FLaRe's frames: 396x224 -> 384x224
    cfg = PPOConfig(init=str(bundle), task="objectnav", env="ai2thor", env_config=str(thor), n_envs=2, rollout=4,
                    total_steps=16, epochs=2, critic_warmup_steps=8, threads=1, logdir=str(tmp_path / "run"),
                    checkpoint_every=1, progress=False, eval_every=2, eval_episodes=1, eval_envs=1)
    with pytest.raises(ValueError, match=r"DINOv2 directory .*elsewhere does not exist.*--vision-encoder-path"):
        train(cfg)
    from flare_training.evaluate import main as eval_main
    from flare_training.ppo import main as ppo_main

    assert ppo_main(["--init", str(bundle), "--env", "ai2thor", "--env-config", str(thor), "--n-envs", "1",
                     "--logdir", str(tmp_path / "cli"), "--no-progress"]) == 2
    assert eval_main(["--bundle", str(bundle), "--task", "objectnav", "--env", "ai2thor", "--env-config",
                      str(thor)]) == 2
    err = capsys.readouterr().err
    assert err.count("elsewhere does not exist") == 2 and "Traceback" not in err
    cfg.vision_encoder_path = str(dino)
    s = train(cfg)
    assert s["updates"] == 2 and math.isfinite(s["last"]["losses/policy_loss"])
    assert s["last"]["consistency/max_abs_dlogp"] < 1e-5  # the update saw exactly the rollout's features
    assert [e["global_step"] for e in s["evals"]] == [0, 16]
    out = load_bundle(s["bundle"])
    assert out.config.vision == "dinov2" and out.vision_encoder["path"] == str(tmp_path / "elsewhere")
    r = evaluate(out, "objectnav", 1, n_envs=1, env="ai2thor", env_config=str(thor), progress=False,
                 vision_encoder_path=str(dino))
    assert r["episodes"] == 1

    small = dinov2_bundle(tmp_path / "small", dino, cameras=[CameraSpec(n, resize=(24, 42), crop=(24, 40))
                                                             for n in CAMERAS])
    with pytest.raises(ValueError, match=r"DINOv2 vision needs 224x384 frames"):
        evaluate(load_bundle(small), "objectnav", 1, env="ai2thor", env_config=str(thor), progress=False)
    torch.manual_seed(0)
    other = save_bundle(tmp_path / "other", PolicyNet(out.config), embodiment="stretch", cameras=out.cameras,
                        text_encoder={"kind": "minilm"},
                        vision_encoder={"kind": "dinov2", "path": str(dino), "weights_sha256": "0" * 64})
    with pytest.raises(ValueError, match=r"not the one the bundle was converted with"):
        evaluate(load_bundle(other), "objectnav", 1, env="ai2thor", env_config=str(thor), progress=False)
    wide = random_dinov2(tmp_path / "dinov2-48", hidden_size=48, num_hidden_layers=1, num_attention_heads=2)
    with pytest.raises(ValueError, match=r"hidden size 48; the bundle's policy expects 32"):
        evaluate(out, "objectnav", 1, env="ai2thor", env_config=str(thor), progress=False,
                 vision_encoder_path=str(wide))
