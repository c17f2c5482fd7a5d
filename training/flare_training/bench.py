"""Benchmarks.

    flare-train bench throughput [--json] [--steps N] [--n-envs K] [--task T] [--init BUNDLE]
        env-steps/s of FLaRe PPO (the tiny transformer, KV-cached rollouts + 4-epoch updates, separate critic)
        including updates, and in the same run Stable-Baselines3 PPO (MlpPolicy on the same env with the RGB
        frame flattened to a Box, same n_envs, n_steps 128, same number of env steps, SB3's other defaults:
        10 epochs of minibatch 64) as the external peer. Reports where the time goes (env / inference / update).
        Also prints our arithmetic floor: FLOPs per env step (counted on the model) over the best measured fp32
        GEMM rate, i.e. the most steps/s any implementation of this algorithm and model can reach on this CPU.
        With --json the last line is one JSON object (ours_steps_per_s, sb3_steps_per_s, ratio, time splits,
        ours_floor).
    flare-train bench env [...]
        mini-CHORES env throughput (flare_training.envs.bench).

Without --init, throughput uses a randomly initialised `tiny` bundle (same FLOPs as a trained one). Our run
uses FLaRe's defaults except critic_warmup_steps=0, so every update pays for the full actor+critic update.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_random_bundle(out, preset: str = "tiny", embodiment: str = "sim", seed: int = 0, **overrides) -> Path:
    """A randomly initialised policy bundle (development, tests and benchmarks)."""
    from flare_policy.bundle import save_bundle, sim_camera
    from flare_policy.embodiments import get_embodiment
    from flare_policy.model import PRESETS, PolicyNet

    torch.manual_seed(seed)
    cfg = PRESETS[preset](**{"n_actions": len(get_embodiment(embodiment).actions), **overrides})
    return save_bundle(out, PolicyNet(cfg), embodiment=embodiment, cameras=[sim_camera(size=cfg.image_size[0])],
                       text_encoder={"kind": "minilm"}, provenance={"trainer": "random init", "seed": seed})


# ------------------------------------------------------------------------------------------ ours
def bench_ours(task: str, steps: int, n_envs: int, threads: int, init: str | None = None,
               vec: str = "auto", text_encoder=None) -> dict:
    from .ppo import PPOConfig, train

    with tempfile.TemporaryDirectory(prefix="flare-bench-") as tmp:
        bundle = init or str(make_random_bundle(Path(tmp) / "bundle"))
        cfg = PPOConfig(init=bundle, task=task, total_steps=steps, n_envs=n_envs, critic_warmup_steps=0,
                        threads=threads, logdir=str(Path(tmp) / "run"), checkpoint_every=0, progress=False, vec=vec)
        s = train(cfg, text_encoder=text_encoder)
    t = s["time_s"]
    return {"steps": s["global_step"], "wall_s": s["wall_s"], "steps_per_s": s["steps_per_s"],
            "env_s": t["env"], "inference_s": t["inference"], "update_s": t["update"],
            "other_s": round(s["wall_s"] - t["env"] - t["inference"] - t["update"], 3)}


def ours_floor(task: str, n_envs: int, threads: int, init: str | None = None, rollout: int = 128,
               epochs: int = 4) -> dict:
    """Arithmetic floor of our PPO on this CPU: FLOPs per env step (cached rollout step of actor and critic
    copies + `epochs` forward/backward passes of both over the rollout as full sequences, counted by torch on the
    real model and a real goal of `task`) over the best measured fp32 GEMM rate at the tiny model's shapes.
    No implementation of this algorithm and model runs faster than floor_steps_per_s here."""
    from flare_policy.bench import count_flops, mlp_rate
    from flare_policy.bundle import load_bundle
    from flare_policy.model import ActorCritic, PolicyInput

    from .envs import make_env
    from .ppo import _load_text_encoder

    with tempfile.TemporaryDirectory(prefix="flare-bench-") as tmp:
        bundle = load_bundle(init or make_random_bundle(Path(tmp) / "bundle"))
    cfg = bundle.config
    env = make_env(task)
    obs, _ = env.reset(seed=0)
    env.close()
    text = _load_text_encoder(bundle).encode(obs["goal"])[None]  # (1, L, text_dim)
    ac = ActorCritic(cfg).eval()
    N, T = min(n_envs, 2), rollout  # FLOPs per env step do not depend on the number of envs
    frames = torch.as_tensor(np.repeat(obs["rgb"][None, None], T, axis=1).repeat(N, 0))
    z = lambda *shape: torch.zeros(*shape, dtype=torch.long)  # noqa: E731
    seq = PolicyInput({k: frames for k in cfg.cameras}, text, torch.ones(text.shape[:2], dtype=torch.bool),
                      z(N, T), z(N, T), z(N, T), torch.arange(T).repeat(N, 1))

    def update_pass():
        dist, value = ac(seq, window=T + 1)
        (dist.logits.logsumexp(-1).mean() + value.mean()).backward()

    step = PolicyInput({k: v[:, :1] for k, v in seq.images.items()}, seq.text, seq.text_mask, z(N, 1), z(N, 1),
                       z(N, 1), z(N, 1))
    caches = ac.new_caches(N, T + 1)
    update = sum(count_flops(update_pass).values()) / (N * T)
    with torch.no_grad():
        rollout_step = sum(count_flops(lambda: ac(step, caches=caches)).values()) / N
    per_step = epochs * update + rollout_step
    d = cfg.d_model
    rate = mlp_rate(threads, 16384, d, max(cfg.fusion_ff, 2 * d))  # the fusion feed-forward's shapes
    return {"gflop_per_env_step": per_step / 1e9, "gflop_update_per_env_step": epochs * update / 1e9,
            "gflop_rollout_per_env_step": rollout_step / 1e9, "gemm_fp32_gflops": rate / 1e9,
            "floor_steps_per_s": rate / per_step, "text_tokens": int(text.shape[1])}


# ------------------------------------------------------------------------------------------ SB3
def _sb3_env(task: str, seed: int, clock: dict):
    import gymnasium as gym
    from gymnasium import spaces

    from .envs import make_env

    class FlatRGB(gym.Wrapper):
        """The 56x56x3 frame as a flat float Box in [0, 1] (no goal text: SB3's MLP cannot read it)."""

        def __init__(self, env):
            super().__init__(env)
            n = int(np.prod(env.observation_space["rgb"].shape))
            self.observation_space = spaces.Box(0.0, 1.0, (n,), np.float32)

        def _flat(self, obs):
            return obs["rgb"].reshape(-1).astype(np.float32) / 255.0

        def reset(self, **kw):
            t0 = time.perf_counter()
            obs, info = self.env.reset(**kw)
            clock["env"] += time.perf_counter() - t0
            return self._flat(obs), info

        def step(self, a):
            t0 = time.perf_counter()
            obs, r, te, tr, info = self.env.step(int(a))
            out = (self._flat(obs), r, te, tr, info)
            clock["env"] += time.perf_counter() - t0
            return out

    return lambda: FlatRGB(make_env(task))


def bench_sb3(task: str, steps: int, n_envs: int, threads: int, seed: int = 0) -> dict:
    import contextlib
    import io

    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    torch.set_num_threads(threads)
    clock = {"env": 0.0, "rollout": 0.0}

    class Times(BaseCallback):
        def _on_rollout_start(self):
            self.t0 = time.perf_counter()

        def _on_rollout_end(self):
            clock["rollout"] += time.perf_counter() - self.t0

        def _on_step(self):
            return True

    venv = DummyVecEnv([_sb3_env(task, seed, clock) for _ in range(n_envs)])
    venv.seed(seed)
    model = PPO("MlpPolicy", venv, n_steps=128, device="cpu", seed=seed, verbose=0)
    with contextlib.redirect_stdout(io.StringIO()):  # minigrid level-generation chatter
        t0 = time.perf_counter()
        model.learn(total_timesteps=steps, callback=Times())
        wall = time.perf_counter() - t0
    venv.close()
    n = int(model.num_timesteps)
    return {"steps": n, "wall_s": round(wall, 3), "steps_per_s": n / wall, "env_s": round(clock["env"], 3),
            "inference_s": round(clock["rollout"] - clock["env"], 3), "update_s": round(wall - clock["rollout"], 3),
            "other_s": 0.0}


# ------------------------------------------------------------------------------------------ CLI
def throughput(argv) -> int:
    p = argparse.ArgumentParser(prog="flare-train bench throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="objectnav")
    p.add_argument("--steps", type=int, default=4096, help="env steps per contender (rounded up to whole rollouts)")
    p.add_argument("--n-envs", type=int, default=16)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads for both (default 0 = auto: idle CPUs by load average, as flare-train ppo)")
    p.add_argument("--init", help="bundle to benchmark (default: a random tiny bundle)")
    p.add_argument("--vec", default="auto", choices=("auto", "sync", "async"))
    p.add_argument("--skip-sb3", action="store_true")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    a = p.parse_args(argv)
    steps = -(-a.steps // (a.n_envs * 128)) * a.n_envs * 128
    if not a.threads:
        from .ppo import auto_threads

        a.threads = auto_threads()
    load0 = os.getloadavg()[0]
    ours = bench_ours(a.task, steps, a.n_envs, a.threads, a.init, a.vec)
    sb3 = None if a.skip_sb3 else bench_sb3(a.task, steps, a.n_envs, a.threads)
    floor = ours_floor(a.task, a.n_envs, a.threads, a.init)
    rows = [("ours (FLaRe PPO, tiny transformer)", ours)] + ([("SB3 PPO MlpPolicy", sb3)] if sb3 else [])
    print(f"task {a.task}, {a.n_envs} envs x 128 steps, {steps} env steps each, {a.threads} torch threads")
    print(f"{'':36} {'steps/s':>9} {'wall s':>8} {'env s':>8} {'infer s':>8} {'update s':>9}")
    for name, r in rows:
        print(f"{name:36} {r['steps_per_s']:9.1f} {r['wall_s']:8.1f} {r['env_s']:8.1f} {r['inference_s']:8.1f} "
              f"{r['update_s']:9.1f}")
    print(f"arithmetic floor of ours: {floor['gflop_per_env_step']:.3f} GFLOP per env step "
          f"({floor['gflop_update_per_env_step']:.3f} update, {floor['gflop_rollout_per_env_step']:.3f} rollout) at "
          f"{floor['gemm_fp32_gflops']:.0f} GFLOP/s (best fp32 GEMM, {a.threads} threads) -> at most "
          f"{floor['floor_steps_per_s']:.0f} steps/s on this CPU")
    load = [round(load0, 2), round(os.getloadavg()[0], 2)]
    print(f"1-min load average before/after: {load[0]} / {load[1]} on {os.cpu_count()} CPUs")
    out = {"task": a.task, "n_envs": a.n_envs, "steps": steps, "threads": a.threads, "loadavg": load,
           "ours_steps_per_s": round(ours["steps_per_s"], 2), "ours": ours, "ours_floor": floor}
    if sb3:
        out.update(sb3_steps_per_s=round(sb3["steps_per_s"], 2), sb3=sb3,
                   ratio=round(ours["steps_per_s"] / sb3["steps_per_s"], 4))
        print(f"ours / SB3 = {out['ratio']:.3f}")
    if a.json:
        print(json.dumps(out))
    return 0


def env(argv) -> int:
    try:
        mod = importlib.import_module("flare_training.envs.bench")
    except ImportError as e:
        print(f"flare-train bench env: flare_training.envs.bench is not available ({e})", file=sys.stderr)
        return 1
    if hasattr(mod, "main"):
        return int(mod.main(argv) or 0)
    print(json.dumps(mod.benchmark_envs()))
    return 0


BENCHES = {"throughput": (throughput, "PPO env-steps/s incl. updates: ours vs Stable-Baselines3"),
           "env": (env, "mini-CHORES environment throughput")}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHES:
        print("usage: flare-train bench <name> [options]\n\nbenchmarks:")
        for name, (_, h) in BENCHES.items():
            print(f"  {name:<11} {h}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    return BENCHES[argv[0]][0](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
