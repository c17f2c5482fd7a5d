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
    flare-train bench bc [--data DIR ...] [--json] [--steps N] [--batch B] [--window W] [--amp auto|on|off]
        behaviour-cloning frames/s trained (data path included: windows drawn from a real demo dataset held
        as compact tile indices) and its arithmetic floor (FLOPs per frame of forward+backward counted on the
        model over the best fp32 GEMM rate); with --amp auto on a CPU with native bf16 also the bf16 autocast
        rate and the loss difference to fp32 on the same batches from the same weights.
    flare-train bench update [--json] [--envs E] [--rollout T] [--no-compile]
        where the PPO update's time goes: forward+backward of one `update_chunk` block (E envs x T steps) of
        one `tiny` copy, timed eager and (unless --no-compile) under torch.compile, with the top operators of
        a torch.profiler trace by self CPU time.
    flare-train bench env [...]
        mini-CHORES env throughput (flare_training.envs.bench).

Every bench prints the CPU model and its AVX2 / AVX-512 / VNNI / bf16 / AMX flags (also in the JSON as "cpu"):
figures are only comparable between machines with the same flags.

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

from .allocator import keep_freed_memory


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
    from flare_policy.cpuinfo import cpu_info, describe

    print(describe())
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
           "cpu": cpu_info(), "ours_steps_per_s": round(ours["steps_per_s"], 2), "ours": ours, "ours_floor": floor,
           "floor_fraction": round(ours["steps_per_s"] / floor["floor_steps_per_s"], 4)}
    print(f"ours at {out['floor_fraction']:.1%} of the floor")
    if sb3:
        out.update(sb3_steps_per_s=round(sb3["steps_per_s"], 2), sb3=sb3,
                   ratio=round(ours["steps_per_s"] / sb3["steps_per_s"], 4))
        print(f"ours / SB3 = {out['ratio']:.3f}")
    if a.json:
        print(json.dumps(out))
    return 0


def bench_bc(data: list[str], steps: int, batch: int, window: int, threads: int, bf16: bool,
             seed: int = 0, init_state: dict | None = None) -> dict:
    """Train the tiny policy for `steps` BC steps on windows drawn from `data`; returns rates and losses."""
    from flare_policy.model import PRESETS, PolicyNet
    from flare_policy.text import TextEncoder

    from .agent import GoalBank
    from .bc import bc_loss, sample_batch
    from .dataset import DemoDataset

    torch.set_num_threads(threads)
    keep_freed_memory()
    t0 = time.perf_counter()
    ds = DemoDataset(data)
    ds.preload()
    load_s = time.perf_counter() - t0
    bank = GoalBank(TextEncoder("minilm"))
    bank.text_encoder.prefetch(ds.goals)
    bank.index(sorted(set(ds.goals)))
    torch.manual_seed(seed)
    model = PolicyNet(PRESETS["tiny"](n_actions=8))
    if init_state is not None:
        model.load_state_dict(init_state)
    state0 = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    sample_s = train_s = 0.0
    losses = []
    for i in range(steps + 2):  # two warm-up steps
        t1 = time.perf_counter()
        b = sample_batch(ds, batch, window, 8, rng)
        t2 = time.perf_counter()
        loss, _ = bc_loss(model, b, bank, bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t3 = time.perf_counter()
        if i >= 2:
            sample_s += t2 - t1
            train_s += t3 - t2
        losses.append(loss.item())
    frames = steps * batch * window
    return {"episodes": len(ds), "frames_in_dataset": ds.num_steps, "memory_mib": round(ds.memory_bytes() / 2**20, 1),
            "load_s": round(load_s, 2), "frames_per_s": frames / (sample_s + train_s),
            "train_frames_per_s": frames / train_s, "sample_ms_per_step": 1e3 * sample_s / steps,
            "train_ms_per_step": 1e3 * train_s / steps, "losses": losses, "init_state": state0, "batch": b, "bank": bank}


def bc_floor(batch_np: dict, bank, threads: int) -> dict:
    """FLOPs per frame of one BC forward+backward (counted on the tiny model) over the best fp32 GEMM rate."""
    from flare_policy.bench import count_flops, mlp_rate
    from flare_policy.model import PRESETS, PolicyNet

    from .bc import bc_loss

    model = PolicyNet(PRESETS["tiny"](n_actions=8))
    flops = sum(count_flops(lambda: bc_loss(model, batch_np, bank)[0].backward()).values())
    frames = int(np.prod(batch_np["action"].shape))
    cfg = model.cfg
    rate = mlp_rate(threads, 16384, cfg.d_model, max(cfg.fusion_ff, 2 * cfg.d_model))
    return {"gflop_per_frame": flops / frames / 1e9, "gemm_fp32_gflops": rate / 1e9,
            "floor_frames_per_s": rate / (flops / frames)}


def bc(argv) -> int:
    p = argparse.ArgumentParser(prog="flare-train bench bc", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", help="demo directories (default: generate 1,000 episodes per demo family "
                                              "into a temporary directory, ~20 s)")
    p.add_argument("--steps", type=int, default=20, help="timed BC steps per precision")
    p.add_argument("--batch", type=int, default=8, help="windows per step (BCConfig.batch_size)")
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--amp", default="auto", choices=("auto", "on", "off"),
                   help="also measure bf16 autocast (auto: only where the CPU has native bf16)")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    a = p.parse_args(argv)
    from flare_policy.cpuinfo import cpu_info, describe, use_bf16

    print(describe())
    with tempfile.TemporaryDirectory(prefix="flare-bench-bc-") as tmp:
        data = a.data
        if not data:
            from .demos import main as demos_main

            demos_main(["--task", "all", "--episodes", "1000", "--out", f"{tmp}/demos", "--quiet"])
            data = [f"{tmp}/demos"]
        load0 = os.getloadavg()[0]
        fp32 = bench_bc(data, a.steps, a.batch, a.window, a.threads, bf16=False)
        floor = bc_floor(fp32["batch"], fp32["bank"], a.threads)
        half = (bench_bc(data, a.steps, a.batch, a.window, a.threads, bf16=True, init_state=fp32["init_state"])
                if use_bf16(a.amp) else None)
    out = {"cpu": cpu_info(), "threads": a.threads, "batch": a.batch, "window": a.window, "steps": a.steps,
           "episodes": fp32["episodes"], "frames_in_dataset": fp32["frames_in_dataset"],
           "dataset_memory_mib": fp32["memory_mib"], "dataset_load_s": fp32["load_s"],
           "dataset_raw_frames_mib": round(fp32["frames_in_dataset"] * 56 * 56 * 3 / 2**20, 1),
           "fp32": {k: round(fp32[k], 2) for k in ("frames_per_s", "train_frames_per_s", "sample_ms_per_step",
                                                   "train_ms_per_step")},
           "floor": {k: round(v, 4) for k, v in floor.items()}}
    out["floor_fraction"] = round(fp32["frames_per_s"] / floor["floor_frames_per_s"], 4)
    print(f"dataset: {out['episodes']:,} episodes, {out['frames_in_dataset']:,} frames, "
          f"{out['dataset_memory_mib']} MiB in memory as tile indices ({out['dataset_raw_frames_mib']:,} MiB as raw "
          f"frames; loaded in {out['dataset_load_s']} s)")
    print(f"fp32: {out['fp32']['frames_per_s']:.0f} frames/s trained ({out['fp32']['sample_ms_per_step']:.1f} ms "
          f"sampling + {out['fp32']['train_ms_per_step']:.0f} ms forward/backward/step per {a.batch}x{a.window} batch)")
    print(f"floor: {floor['gflop_per_frame'] * 1e3:.1f} MFLOP per frame at {floor['gemm_fp32_gflops']:.0f} GFLOP/s "
          f"(best fp32 GEMM, {a.threads} threads) -> at most {floor['floor_frames_per_s']:.0f} frames/s; "
          f"fp32 at {out['floor_fraction']:.1%} of it")
    if half:
        diff = np.abs(np.array(half["losses"]) - np.array(fp32["losses"]))
        out["bf16"] = {k: round(half[k], 2) for k in ("frames_per_s", "train_frames_per_s", "sample_ms_per_step",
                                                     "train_ms_per_step")}
        out["bf16"].update(speedup=round(half["frames_per_s"] / fp32["frames_per_s"], 3),
                           max_abs_loss_diff=round(float(diff.max()), 5),
                           final_loss_fp32=round(fp32["losses"][-1], 5), final_loss_bf16=round(half["losses"][-1], 5))
        print(f"bf16 autocast: {out['bf16']['frames_per_s']:.0f} frames/s ({out['bf16']['speedup']:.2f}x fp32); "
              f"loss over {a.steps + 2} steps from the same weights and batches differs by at most "
              f"{out['bf16']['max_abs_loss_diff']:.4f} (final {out['bf16']['final_loss_bf16']:.4f} vs "
              f"{out['bf16']['final_loss_fp32']:.4f})")
    out["loadavg"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    if a.json:
        print(json.dumps(out))
    return 0


def update(argv) -> int:
    p = argparse.ArgumentParser(prog="flare-train bench update", description="Profile one PPO update chunk.")
    p.add_argument("--envs", type=int, default=4, help="envs per chunk (PPO's update_chunk; default 4)")
    p.add_argument("--rollout", type=int, default=128, help="steps per env (default 128)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--iters", type=int, default=5, help="timed forward+backward passes (default 5)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile comparison")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    a = p.parse_args(argv)
    from torch.profiler import ProfilerActivity, profile

    from flare_policy.cpuinfo import cpu_info, describe
    from flare_policy.model import PolicyInput, PolicyNet, tiny

    torch.set_num_threads(a.threads)
    keep_freed_memory()
    print(describe())
    torch.manual_seed(0)
    net = PolicyNet(tiny())
    B, T, G, L = a.envs, a.rollout, 8, 6
    inp = PolicyInput(images={net.cfg.cameras[0]: torch.randint(0, 255, (B, T, 56, 56, 3), dtype=torch.uint8)},
                      text=torch.randn(G, L, net.cfg.text_dim), text_mask=torch.ones(G, L, dtype=torch.bool),
                      goal_index=torch.randint(0, G, (B, T)), prev_action=torch.randint(0, net.cfg.n_actions, (B, T)),
                      in_hand=torch.zeros(B, T, dtype=torch.long), step=torch.arange(T).repeat(B, 1) % 50)

    def pass_(f):
        logits, value, _ = f(inp, window=T + 1)
        (logits.logsumexp(-1).mean() + value.mean()).backward()

    def timed(f) -> float:
        for _ in range(2):
            pass_(f)
        t = time.perf_counter()
        for _ in range(a.iters):
            pass_(f)
        return (time.perf_counter() - t) / a.iters

    res = {"envs": B, "rollout": T, "threads": a.threads, "cpu": cpu_info(), "eager_ms": 1e3 * timed(net)}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        pass_(net)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]
    res["top_ops"] = [{"op": e.key, "share": round(e.self_cpu_time_total / total, 4)} for e in top]
    print(f"forward+backward of {B} envs x {T} steps, one tiny copy, {a.threads} thread(s): "
          f"eager {res['eager_ms']:.1f} ms")
    for r in res["top_ops"]:
        print(f"  {100 * r['share']:5.1f}%  {r['op']}")
    if not a.no_compile:
        t0 = time.time()
        try:
            res["compiled_ms"] = 1e3 * timed(torch.compile(net, dynamic=False))
            res["compile_s"] = round(time.time() - t0, 1)
            res["compile_speedup"] = round(res["eager_ms"] / res["compiled_ms"], 3)
            print(f"torch.compile: {res['compiled_ms']:.1f} ms ({res['compile_speedup']:.2f}x eager; "
                  f"{res['compile_s']} s to compile and warm up)")
        except Exception as e:  # noqa: BLE001 - report whatever the compiler stack says
            res["compile_error"] = f"{type(e).__name__}: {e}"[:300]
            print(f"torch.compile failed: {res['compile_error']}")
    if a.json:
        print(json.dumps(res))
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
           "bc": (bc, "behaviour-cloning frames/s (data path included) vs its arithmetic floor"),
           "update": (update, "where a PPO update chunk's time goes (profile; eager vs torch.compile)"),
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
