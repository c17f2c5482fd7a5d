"""FLaRe PPO scale-out: `torchrun --nproc_per_node 2 -m flare_training.ppo` on CPU (gloo). Each rank collects
its own data (different env seeds), gradients are averaged, parameters stay identical on every rank, and only
rank 0 writes checkpoints, logs and the bundle."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from flare_training.ppo import latest_checkpoint

from test_ppo_consistency import micro_bundle


def test_two_ranks_keep_identical_parameters(tmp_path):
    micro = str(micro_bundle(tmp_path / "micro"))
    sums, logdir = tmp_path / "sums", tmp_path / "run"
    n_envs, rollout, updates = 2, 16, 3
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "flare_training.ppo", "--init", micro, "--task", "pickup", "--n-envs", str(n_envs),
           "--rollout", str(rollout), "--total-steps", str(updates * 2 * n_envs * rollout),
           "--critic-warmup-steps", str(2 * n_envs * rollout), "--lr", "1e-3", "--threads", "1", "--no-progress",
           "--checkpoint-every", "2", "--logdir", str(logdir), "--debug-checksum-dir", str(sums)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    r0 = [line.split() for line in (sums / "rank0.txt").read_text().splitlines()]
    r1 = [line.split() for line in (sums / "rank1.txt").read_text().splitlines()]
    assert len(r0) == len(r1) == updates
    assert [(u, p) for u, p, _ in r0] == [(u, p) for u, p, _ in r1], "parameters diverged across ranks"
    assert all(a[2] != b[2] for a, b in zip(r0, r1)), "both ranks collected the same data"
    assert len({p for _, p, _ in r0}) == updates, "parameters did not change between updates"
    # one writer: one header line, one bundle, checkpoints hold both ranks' state
    assert out.stdout.count("PPO pickup:") == 1
    _, st = latest_checkpoint(logdir)
    assert st["world_size"] == 2 and len(st["ranks"]) == 2 and st["global_step"] == updates * 2 * n_envs * rollout
    assert json.loads(st["ranks"][0]["envs"]) != json.loads(st["ranks"][1]["envs"])
    assert (logdir / "bundle" / "model.safetensors").is_file()
