"""Throughput of the mini-CHORES envs and the experts, and the expert's success rate.

    python -m flare_training.envs.bench [--seconds 2] [--expert-seeds 200] [--tasks objectnav,...] [--json]

`benchmark_envs()` returns a dict per task: env steps/s with rendering (random actions, resets included, single
process), reset time, expert demos/s and expert steps/s (recording frames, as `flare-train demos` does per
worker). Each rate is given per wall second and per CPU second of this process (`*_per_cpu_s`: what one
uncontended core achieves; on a shared machine the wall rates are lower). `measure_expert()` runs the expert on N seeds per task and reports success and episode lengths.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from flare_training.envs import DEMO_TASKS, TASKS, make_env, split_seeds


def _env_speed(task, seconds, embodiment, rng):
    env = make_env(task, embodiment=embodiment)
    # Random exploration-like policy: mostly moves/turns, sometimes the other actions.
    probs = np.array([0.45, 0.2, 0.2, 0.04, 0.03, 0.05, 0.0, 0.03])
    if env.allowed is not None:
        probs = np.array([p if i in env.allowed else 0.0 for i, p in enumerate(probs)])
    probs /= probs.sum()
    seed = 0
    env.reset(seed=seed)
    steps = resets = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        for a in rng.choice(len(probs), size=256, p=probs):
            _, _, term, trunc, _ = env.step(int(a))
            steps += 1
            if term or trunc:
                seed += 1
                resets += 1
                env.reset(seed=seed)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    c1 = time.process_time()
    for s in range(50):
        env.reset(seed=10_000 + s)
    reset_ms = (time.process_time() - c1) / 50 * 1e3
    return dict(env_steps_per_s=round(steps / dt, 1), env_steps_per_cpu_s=round(steps / cpu, 1), resets=resets,
                reset_cpu_ms=round(reset_ms, 3))


def _expert_speed(task, seconds, embodiment):
    from flare_training.expert import run_expert
    env = make_env(task, embodiment=embodiment)
    n = steps = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        ep, _ = run_expert(env, n, 3.0, record=True)
        n += 1
        steps += ep.expert_length if ep is not None else 0
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return dict(expert_demos_per_s=round(n / dt, 2), expert_demos_per_cpu_s=round(n / cpu, 2),
                expert_steps_per_s=round(steps / dt, 1), expert_steps_per_cpu_s=round(steps / cpu, 1))


def benchmark_envs(tasks=None, seconds: float = 2.0, embodiment: str = "sim", seed: int = 0) -> dict:
    """{task: {env_steps_per_s, resets, reset_ms, expert_demos_per_s, expert_steps_per_s}} (one process)."""
    tasks = list(tasks or TASKS)
    rng = np.random.default_rng(seed)
    out = {}
    for task in tasks:
        if embodiment == "sim_locobot" and not TASKS[task].nav_only:
            continue
        r = _env_speed(task, seconds, embodiment, rng)
        r.update(_expert_speed(task, seconds, embodiment))
        out[task] = r
    return out


def measure_expert(tasks=None, n: int = 200, split: str = "train", offset: int = 0, embodiment: str = "sim",
                   watchdog_s: float = 3.0) -> dict:
    """{task: {seeds, success, hung, failed, error, mean_len, p95_len, max_len, max_steps}} over n seeds."""
    from flare_training.expert import run_expert
    tasks = list(tasks or DEMO_TASKS)
    out = {}
    for task in tasks:
        if embodiment == "sim_locobot" and not TASKS[task].nav_only:
            continue
        env = make_env(task, embodiment=embodiment, render=False)
        status, lens = {"ok": 0, "hung": 0, "failed": 0, "error": 0}, []
        for s in split_seeds(split, n, offset):
            ep, st = run_expert(env, s, watchdog_s, record=False)
            status[st] += 1
            if ep is not None:
                lens.append(ep.expert_length)
        L = np.asarray(lens) if lens else np.zeros(1)
        out[task] = dict(seeds=n, success=round(status["ok"] / n, 4), hung=status["hung"],
                         failed=status["failed"], error=status["error"], mean_len=round(float(L.mean()), 2),
                         p95_len=float(np.percentile(L, 95)), max_len=int(L.max()),
                         max_steps=TASKS[task].max_steps)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m flare_training.envs.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="", help="comma-separated tasks (default: all)")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds per throughput measurement")
    p.add_argument("--expert-seeds", type=int, default=0, help="also measure expert success over N seeds")
    p.add_argument("--split", default="train", choices=("train", "val", "test"))
    p.add_argument("--embodiment", default="sim", choices=("sim", "sim_locobot"))
    p.add_argument("--json", action="store_true", help="print JSON only")
    a = p.parse_args(argv)
    tasks = [t for t in a.tasks.split(",") if t] or list(TASKS)
    res = {"throughput": benchmark_envs(tasks, a.seconds, a.embodiment)}
    if a.expert_seeds:
        res["expert"] = measure_expert(tasks, a.expert_seeds, a.split, embodiment=a.embodiment)
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"{'task':22s} {'env steps/s':>11s} {'(per CPU s)':>11s} {'reset ms':>8s} {'demos/s':>8s} "
          f"{'(per CPU s)':>11s} {'expert steps/s':>14s}")
    for t, r in res["throughput"].items():
        print(f"{t:22s} {r['env_steps_per_s']:11.0f} {r['env_steps_per_cpu_s']:11.0f} {r['reset_cpu_ms']:8.2f} "
              f"{r['expert_demos_per_s']:8.1f} {r['expert_demos_per_cpu_s']:11.1f} {r['expert_steps_per_s']:14.0f}")
    if "expert" in res:
        print(f"\n{'task':22s} {'seeds':>5s} {'success':>7s} {'hung':>4s} {'fail':>4s} {'mean len':>8s} "
              f"{'p95':>5s} {'max':>4s} {'max_steps':>9s}")
        for t, r in res["expert"].items():
            print(f"{t:22s} {r['seeds']:5d} {r['success']:7.3f} {r['hung']:4d} {r['failed'] + r['error']:4d} "
                  f"{r['mean_len']:8.1f} {r['p95_len']:5.0f} {r['max_len']:4d} {r['max_steps']:9d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
