"""FLaRe PPO checkpoints: env state save/replay, exact resume (params, optimizer, RNG, env seeds), resume after
SIGKILL at a random moment (subprocess), and the non-finite-loss stop that keeps the last good checkpoint."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from flare_training import ppo
from flare_training.checkpoint import load_checkpoint
from flare_training.ppo import NonFiniteLoss, PPOConfig, checkpoint_files, latest_checkpoint, train
from flare_training.vecenv import SeedStream, make_vec_env

from test_ppo_consistency import StubTextEncoder, micro_bundle

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return str(micro_bundle(tmp_path_factory.mktemp("ppo_resume") / "micro"))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_vecenv_state_replay(kind):
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 8, size=(40, 3))  # includes `end`: episodes finish and auto-reset
    a = make_vec_env(kind, "pickup", 3, SeedStream(7, 3), workers=2)
    b = make_vec_env(kind, "pickup", 3, SeedStream(7, 3), workers=2)
    try:
        a.reset()
        ended = 0
        for t in range(25):
            _, _, term, trunc, infos = a.step(acts[t])
            ended += int((term | trunc).sum())
            for i, info in enumerate(infos):
                if "episode" in info:  # the auto-reset moved env i to the next seed of its stream
                    assert info["episode"]["seed"] == SeedStream(7, 3)(i, a.state()[i]["episode"] - 1)
        assert ended > 0
        st = a.state()
        ob = b.restore(json.loads(json.dumps(st)))
        assert b.state() == st
        for t in range(25, 40):
            oa = a.step(acts[t])
            ob = b.step(acts[t])
            assert np.array_equal(oa[0]["rgb"], ob[0]["rgb"]) and oa[0]["goal"] == ob[0]["goal"]
            assert np.array_equal(oa[0]["step"], ob[0]["step"]) and np.array_equal(oa[1], ob[1])
    finally:
        a.close()
        b.close()


def _cfg(micro, logdir, total_updates, **kw):
    n_envs, rollout = 3, 16
    base = dict(init=micro, task="pickup", n_envs=n_envs, rollout=rollout, total_steps=total_updates * n_envs * rollout,
                critic_warmup_steps=n_envs * rollout, checkpoint_every=1, threads=1, progress=False,
                logdir=str(logdir), lr=1e-3)
    base.update(kw)
    return PPOConfig(**base)


def test_resume_is_exact(micro, tmp_path):
    te = StubTextEncoder()
    full = train(_cfg(micro, tmp_path / "a", 4), text_encoder=te)
    train(_cfg(micro, tmp_path / "b", 2), text_encoder=te)
    resumed = train(_cfg(micro, tmp_path / "b", 4), resume=True, text_encoder=te)
    assert full["global_step"] == resumed["global_step"] == 4 * 48
    (_, a), (_, b) = latest_checkpoint(tmp_path / "a"), latest_checkpoint(tmp_path / "b")
    assert a["update"] == b["update"] == 4
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for k, v in a["optimizer"]["state"].items():
        assert all(torch.equal(x, b["optimizer"]["state"][k][n]) for n, x in v.items())
    assert a["ranks"][0]["envs"] == b["ranks"][0]["envs"]
    assert torch.equal(a["ranks"][0]["torch_rng"], b["ranks"][0]["torch_rng"])
    assert len(checkpoint_files(tmp_path / "a")) == 2  # keep_checkpoints
    # the exported bundle: actor copy + critic copy, and critic_init=bundle warm-starts from its critic
    from flare_policy.bundle import load_bundle
    from flare_training.ppo import build_actor_critic

    out = load_bundle(tmp_path / "b" / "bundle", with_critic=True)
    assert out.provenance["global_step"] == 4 * 48 and out.critic is not None
    ac = build_actor_critic(PPOConfig(init=str(out.path), critic_init="bundle"), out)
    for k, v in ac.critic.state_dict().items():
        assert torch.equal(v, b["model"]["critic." + k]), k
    for k, v in ac.actor.state_dict().items():
        assert torch.equal(v, b["model"]["actor." + k]), k
    events = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert any(e.get("event/resume") == 2 for e in events)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(micro, tmp_path, monkeypatch, capsys):
    with pytest.raises(NonFiniteLoss, match=r"(?s)non-finite loss in update 3 .*loss=nan.*last good checkpoint"):
        train(_cfg(micro, tmp_path / "r", 5, debug_inject_nan_at_update=3), text_encoder=StubTextEncoder())
    path, st = latest_checkpoint(tmp_path / "r")
    assert st["update"] == 2 and all(torch.isfinite(v).all() for v in st["model"].values())
    assert not (tmp_path / "r" / "bundle").exists()
    # the CLI reports it and exits with code 3
    monkeypatch.setattr(ppo, "_load_text_encoder", lambda bundle: StubTextEncoder())
    args = ["--init", micro, "--task", "pickup", "--n-envs", "2", "--rollout", "8", "--total-steps", "64",
            "--threads", "1", "--no-progress", "--logdir", str(tmp_path / "cli"), "--debug-inject-nan-at-update", "2",
            "--checkpoint-every", "1"]
    assert ppo.main(args) == ppo.EXIT_NONFINITE
    err = capsys.readouterr().err
    assert "non-finite loss in update 2" in err and "ckpt_0000001.pt" in err


def test_resume_after_sigkill(micro, tmp_path):
    logdir = tmp_path / "run"
    n_envs, rollout = 2, 16
    spu = n_envs * rollout
    cmd = [sys.executable, "-m", "flare_training.ppo", "--init", micro, "--task", "pickup", "--n-envs", str(n_envs),
           "--rollout", str(rollout), "--checkpoint-every", "1", "--threads", "1", "--no-progress",
           "--critic-warmup-steps", str(spu), "--logdir", str(logdir)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd + ["--total-steps", str(1000 * spu)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.time() + 240
        while len(checkpoint_files(logdir)) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert checkpoint_files(logdir), f"no checkpoint in time:\n{proc.stdout.read() if proc.poll() else ''}"
        time.sleep(random.uniform(0.0, 1.5))  # somewhere in a rollout, an update or a checkpoint write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    # every complete checkpoint verifies; at most the newest one can be cut off (no checksum sidecar yet)
    files = checkpoint_files(logdir)
    complete = [p for p in files if p.with_name(p.name + ".sha256").exists()]
    assert complete and set(files) - set(complete) <= {files[-1]}
    for p in complete:
        load_checkpoint(p)
    path, st = latest_checkpoint(logdir)
    upd, step = int(st["update"]), int(st["global_step"])
    assert step == upd * spu
    out = subprocess.run(cmd + ["--resume", "--total-steps", str(step + 2 * spu)], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"resumed from {path} at update {upd} (global step {step})" in out.stdout
    _, st2 = latest_checkpoint(logdir)
    assert (st2["update"], st2["global_step"]) == (upd + 2, step + 2 * spu)
    events = [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    assert any(e.get("event/resume") == upd for e in events)
    assert max(e["global_step"] for e in events) == step + 2 * spu
    assert (logdir / "bundle" / "model.safetensors").is_file()
