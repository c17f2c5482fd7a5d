"""`flare-train report`: FLaRe's experiments on mini-CHORES, one command, cached and resumable.

    flare-train report --suite mini-chores --budget small      # ~42 min on 2 CPU cores, results/mini-chores-small/
    flare-train report --suite mini-chores --budget cpu --jobs 'flare-*'   # the CPU-scale experiment, job by job
    flare-train report --suite mini-chores --budget full       # the real experiment (many cores / a GPU; hours)
    flare-train report ... --only-report                       # regenerate the tables/plots from cached runs only

Sections (paper analogues):
  table1      BC only (SPOC), FLaRe (PPO from BC, sparse reward), PPO from scratch (sparse; PoliFormer-sparse),
              PPO from scratch (dense shaping; PoliFormer-dense) and Stable-Baselines3 PPO from scratch (MlpPolicy
              on the flattened frame; it cannot read the goal text), on the four demonstration families.
  ablations   Fig. 6: FLaRe vs entropy bonus 0.01, learning rate x10, shared actor/critic, no critic warm-up.
  table2      unseen families (never in demonstrations): BC zero-shot, FLaRe (sparse reward), PPO from scratch.
  embodiment  paper Q4: sim_locobot (navigation only, narrower camera panned by two reinterpreted actions) on
              objectnav: BC zero-shot, FLaRe, PPO from scratch; steps and wall time to reach the final success.

Every RL row gets the same env-step budget. Each run is a job with its own directory under `--runs`
(checkpoints: a killed report resumes each PPO run from its newest checkpoint), and its result (final greedy
evaluation on validation seeds with 95% CIs, learning curve, wall time) is written to
`<results>/runs/<job>.json`; jobs with a result whose spec matches are never re-run, so the report is regenerated
from those files alone (they are small and committed). Learning curves are the success rate of the training
episodes (sampled actions) per update, smoothed over 3 updates; steps-to-90% reads the same curve.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .envs import DEMO_TASKS, HELDOUT_TASKS

BC_BUNDLE = "models/sim_tiny_bc"
SECTIONS = ("table1", "ablations", "table2", "embodiment")


@dataclass(frozen=True)
class Budget:
    name: str
    steps: int  # env steps per RL run (every RL row: same budget)
    n_envs: int
    seeds: tuple[int, ...]  # training seeds per RL row
    eval_episodes: int  # validation episodes per final evaluation (greedy)
    critic_warmup_steps: int
    lr: float  # FLaRe's 2e-5 is for 20M-param models over 17-47M steps; see ppo_pickup_short.yaml
    ablation_task: str
    workers: int  # jobs run in parallel, one torch thread each
    # Fields added later; at their defaults they stay out of spec_hash, so older budgets' cached results stay valid.
    task_lr: tuple[tuple[str, float], ...] = ()  # FLaRe's lr per task where it differs from `lr`
    scratch_lr: float = 0.0  # lr of the from-scratch rows (0: the task's FLaRe lr)
    ppo: tuple[tuple[str, object], ...] = ()  # PPOConfig fields set for every RL job (before the row's own)

    def flare_lr(self, task: str) -> float:
        return dict(self.task_lr).get(task, self.lr)

    def hashed(self) -> dict:
        """The fields that decide results (not `workers`; later fields only when set)."""
        later = {"task_lr": (), "scratch_lr": 0.0, "ppo": ()}
        return {k: v for k, v in asdict(self).items()
                if k != "workers" and not (k in later and v == later[k])}


BUDGETS = {
    # 36 jobs in 41.5 min on the 2-core development machine (results/mini-chores-small/timing.json).
    "small": Budget("small", steps=10240, n_envs=8, seeds=(0,), eval_episodes=80, critic_warmup_steps=2048,
                    lr=3e-4, ablation_task="pickup", workers=2),
    # Seconds: checks the plumbing end to end (tests); its numbers mean nothing.
    "smoke": Budget("smoke", steps=512, n_envs=2, seeds=(0,), eval_episodes=2, critic_warmup_steps=256,
                    lr=3e-4, ablation_task="pickup", workers=2),
    # The FLaRe recipe of results/policies (configs flare_<family>_cpu.yaml, one stage): lr 1e-4 (3e-5 for pickup and
    # roomvisit, where 1e-4 lost success), 32 envs, 2 minibatches, critic warm-up 16k; scratch rows at PPO's usual
    # 3e-4. One PPO job: ~31 min at 1 torch thread, two side by side; 48 PPO jobs (+ SB3, BC), ~12.5 h on 2 cores.
    "cpu": Budget("cpu", steps=131072, n_envs=32, seeds=(0, 1), eval_episodes=200, critic_warmup_steps=16384,
                  lr=1e-4, ablation_task="objectnav", workers=2, task_lr=(("pickup", 3e-5), ("roomvisit", 3e-5)),
                  scratch_lr=3e-4, ppo=(("minibatches", 2),)),
    "full": Budget("full", steps=300_000, n_envs=16, seeds=(0, 1, 2), eval_episodes=500,
                   critic_warmup_steps=20_480, lr=3e-4, ablation_task="fetch", workers=8),
}


@dataclass(frozen=True)
class Job:
    """One cell of the report: `kind` ppo (our trainer), sb3 (the external peer) or eval (a bundle as is)."""
    id: str
    kind: str
    task: str
    embodiment: str = "sim"
    seed: int = 0
    ppo: dict = field(default_factory=dict, hash=False)  # PPOConfig overrides

    def spec_hash(self, budget: Budget) -> str:
        blob = json.dumps({"job": asdict(self), "budget": budget.hashed()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Rows: label -> (job kind, PPO overrides). FLaRe = PPO from the BC bundle with the defaults above.
RL_ROWS = {
    "FLaRe": {},
    "scratch-sparse": {"init_weights": "random"},
    "scratch-dense": {"init_weights": "random", "dense_reward": True},
}
ABLATIONS = {
    "entropy 0.01": {"entropy_coef": 0.01},
    "lr x10": {"lr_scale": 10.0},
    "shared actor/critic": {"separate_critic": False},
    "no critic warm-up": {"critic_warmup_steps": 0},
}


def plan(budget: Budget, sections=SECTIONS) -> dict[str, list[tuple[str, str, Job]]]:
    """section -> [(row label, task, job)], one job per seed for RL rows (jobs shared between sections)."""
    out: dict[str, list] = {s: [] for s in sections}

    def ppo_jobs(label, task, emb, over):
        slug = label.lower().replace(" ", "_").replace("/", "_").replace(".", "")
        return [Job(f"{slug}-{task}-{emb}-s{s}", "ppo", task, emb, s, dict(over)) for s in budget.seeds]

    def add(section, label, task, jobs):
        out[section].extend((label, task, j) for j in jobs)

    if "table1" in out:
        for task in DEMO_TASKS:
            add("table1", "BC", task, [Job(f"bc-{task}-sim", "eval", task)])
            for label, over in RL_ROWS.items():
                add("table1", label, task, ppo_jobs(label, task, "sim", over))
            add("table1", "SB3 PPO (scratch)", task,
                [Job(f"sb3-{task}-sim-s{s}", "sb3", task, "sim", s) for s in budget.seeds])
    if "ablations" in out:
        task = budget.ablation_task
        add("ablations", "FLaRe", task, ppo_jobs("FLaRe", task, "sim", {}))
        for label, over in ABLATIONS.items():
            add("ablations", label, task, ppo_jobs(label, task, "sim", over))
    if "table2" in out:
        for task in HELDOUT_TASKS:
            add("table2", "BC zero-shot", task, [Job(f"bc-{task}-sim", "eval", task)])
            add("table2", "FLaRe", task, ppo_jobs("FLaRe", task, "sim", {}))
            add("table2", "scratch-sparse", task, ppo_jobs("scratch-sparse", task, "sim", RL_ROWS["scratch-sparse"]))
    if "embodiment" in out:
        task, emb = "objectnav", "sim_locobot"
        add("embodiment", "BC zero-shot", task, [Job(f"bc-{task}-{emb}", "eval", task, emb)])
        add("embodiment", "FLaRe", task, ppo_jobs("FLaRe", task, emb, {}))
        add("embodiment", "scratch-sparse", task, ppo_jobs("scratch-sparse", task, emb, RL_ROWS["scratch-sparse"]))
    return out


# --------------------------------------------------------------------------------------------- one job
def _eval_summary(s: dict) -> dict:
    keep = ("success", "sel", "episode_length", "pct_rooms", "episodes", "split", "greedy")
    return {k: s[k] for k in keep if k in s}


def _curve_from_metrics(path: Path) -> list[list[float]]:
    """[[global_step, training success rate, cumulative wall s]] per update, from ppo's metrics.jsonl."""
    curve, wall, seen = [], 0.0, set()
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if "charts/update" not in r or r["global_step"] in seen:  # a resumed run may repeat an update
            continue
        seen.add(r["global_step"])
        wall += r.get("perf/env_s", 0) + r.get("perf/inference_s", 0) + r.get("perf/update_s", 0) + r.get(
            "perf/other_s", 0)
        curve.append([r["global_step"], r.get("charts/success_rate", float("nan")), round(wall, 2)])
    return curve


def ppo_settings(job: Job, budget: Budget) -> dict:
    """The PPOConfig fields a PPO job sets: the budget's, then the row's (lr_scale multiplies the row's lr)."""
    over = {**dict(budget.ppo), **job.ppo}
    scratch = over.get("init_weights") == "random"
    lr = budget.scratch_lr if scratch and budget.scratch_lr else budget.flare_lr(job.task)
    lr *= over.pop("lr_scale", 1.0)
    return {"total_steps": budget.steps, "n_envs": budget.n_envs, "lr": lr,
            "critic_warmup_steps": budget.critic_warmup_steps, **over}


def run_job(job: Job, budget: Budget, run_dir: Path) -> dict:
    """Train (if RL) and evaluate one job in this process; returns its result record."""
    import torch

    from flare_policy.bundle import load_bundle

    from .evaluate import evaluate

    torch.set_num_threads(1)
    spec = job.spec_hash(budget)
    stamp = run_dir / "spec.txt"
    if run_dir.exists() and (not stamp.exists() or stamp.read_text().strip() != spec):
        shutil.rmtree(run_dir / "ppo", ignore_errors=True)  # checkpoints of another spec must not be resumed
        shutil.rmtree(run_dir / "bundle", ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(spec + "\n")
    t0 = time.perf_counter()
    rec: dict = {"id": job.id, "job": asdict(job), "budget": budget.name, "spec": spec}
    bundle_path, curve, train_wall = BC_BUNDLE, [], 0.0
    if job.kind == "ppo":
        from .ppo import PPOConfig, train

        cfg = PPOConfig(init=BC_BUNDLE, task=job.task, embodiment=job.embodiment, seed=job.seed,
                        logdir=str(run_dir / "ppo"), out=str(run_dir / "bundle"), checkpoint_every=2,
                        eval_every=0, eval_at_start=False, threads=1, progress=False, vec="sync")
        for k, v in ppo_settings(job, budget).items():
            setattr(cfg, k, v)
        cfg.validate()
        summary = train(cfg, resume=True)
        bundle_path = summary["bundle"]
        curve = _curve_from_metrics(run_dir / "ppo" / "metrics.jsonl")
        train_wall = curve[-1][2] if curve else summary["wall_s"]
    elif job.kind == "sb3":
        ev, curve, train_wall = _sb3_train_eval(job, budget)
        rec.update(eval=ev, curve=curve, train_wall_s=round(train_wall, 1), steps=budget.steps)
        rec["wall_s"] = round(time.perf_counter() - t0, 1)
        return rec
    bundle = load_bundle(bundle_path)
    s = evaluate(bundle, job.task, budget.eval_episodes, split="val", greedy=True, n_envs=8,
                 embodiment=job.embodiment, progress=False, threads=1)
    rec.update(eval=_eval_summary(s), curve=curve, train_wall_s=round(train_wall, 1),
               steps=budget.steps if job.kind == "ppo" else 0, wall_s=round(time.perf_counter() - t0, 1))
    return rec


def _sb3_train_eval(job: Job, budget: Budget):
    """Stable-Baselines3 PPO (defaults, MlpPolicy on the flattened 56x56 frame, dense=False: the same sparse
    reward) for the same env steps; greedy evaluation on the same validation seeds."""
    import contextlib
    import io

    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    from .bench import _sb3_env
    from .envs import sel, split_seeds
    from .evaluate import mean_ci, wilson_ci
    from .expert import expert_length

    torch.set_num_threads(1)
    clock = {"env": 0.0}
    curve: list[list[float]] = []
    t_start = time.perf_counter()

    class Curve(BaseCallback):
        def _on_rollout_start(self):
            self.n = self.s = 0

        def _on_step(self):
            for done, info in zip(self.locals["dones"], self.locals["infos"]):
                if done:
                    self.n += 1
                    self.s += bool(info.get("success", False))
            return True

        def _on_rollout_end(self):
            curve.append([int(self.num_timesteps), self.s / self.n if self.n else float("nan"),
                          round(time.perf_counter() - t_start, 2)])

    venv = DummyVecEnv([_sb3_env(job.task, job.seed, clock) for _ in range(budget.n_envs)])
    venv.seed(job.seed)
    model = PPO("MlpPolicy", venv, n_steps=128, device="cpu", seed=job.seed, verbose=0)
    with contextlib.redirect_stdout(io.StringIO()):
        model.learn(total_timesteps=budget.steps, callback=Curve())
    venv.close()
    train_wall = time.perf_counter() - t_start
    env = _sb3_env(job.task, job.seed, clock)()
    results = []
    for seed in split_seeds("val", budget.eval_episodes):
        obs, _ = env.reset(seed=int(seed))
        length, done, info = 0, False, {}
        while not done:
            a, _ = model.predict(obs, deterministic=True)
            obs, _, term, trunc, info = env.step(int(a))
            length += 1
            done = term or trunc
        ok = bool(info.get("success", False))
        results.append((ok, sel(ok, length, expert_length(job.task, int(seed))) or 0.0, length))
    ev = {"success": wilson_ci(sum(r[0] for r in results), len(results)), "sel": mean_ci([r[1] for r in results]),
          "episode_length": mean_ci([r[2] for r in results]), "episodes": len(results), "split": "val",
          "greedy": True}
    return ev, curve, train_wall


# -------------------------------------------------------------------------------------------- analysis
def smooth(curve, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    if not curve:
        return np.zeros(0), np.zeros(0)
    steps = np.array([c[0] for c in curve], float)
    y = np.array([c[1] for c in curve], float)
    y = np.where(np.isnan(y), 0.0, y)
    ys = np.array([y[max(0, i - k + 1): i + 1].mean() for i in range(len(y))])
    return steps, ys


def steps_to(curve, level: float) -> int | None:
    """First env step at which the smoothed training success reaches `level` (None: never)."""
    steps, ys = smooth(curve)
    hit = np.nonzero(ys >= level)[0]
    return int(steps[hit[0]]) if len(hit) else None


def aggregate(records: list[dict]) -> dict:
    """Mean over seeds of success/SEL (95% CI of the first seed's Wilson/normal interval when one seed)."""
    succ = [r["eval"]["success"]["mean"] for r in records]
    sel_ = [r["eval"]["sel"]["mean"] for r in records]
    out = {"success": float(np.mean(succ)), "sel": float(np.mean(sel_)), "seeds": len(records),
           "episodes": sum(r["eval"]["episodes"] for r in records)}
    if len(records) == 1:
        out["success_ci"] = list(records[0]["eval"]["success"]["ci95"])
        out["sel_ci"] = list(records[0]["eval"]["sel"]["ci95"])
    else:  # across seeds: normal interval of the seed means
        for k, xs in (("success_ci", succ), ("sel_ci", sel_)):
            h = 1.96 * float(np.std(xs, ddof=1)) / np.sqrt(len(xs))
            out[k] = [float(np.mean(xs)) - h, float(np.mean(xs)) + h]
    curves = [r["curve"] for r in records if r.get("curve")]
    if curves:
        s90 = [steps_to(c, 0.9) for c in curves]
        out["steps_to_90"] = None if any(s is None for s in s90) else float(np.mean(s90))
        out["train_wall_s"] = float(np.mean([r["train_wall_s"] for r in records]))
        out["final_train_success"] = float(np.mean([smooth(c)[1][-1] for c in curves]))
        # steps and training wall time until the smoothed curve first reaches its final value
        reach = []
        for c in curves:
            final = smooth(c)[1][-1]
            at = steps_to(c, final - 1e-9)
            wall = next(w for s, _, w in c if s == at) if at is not None else None
            reach.append((at, wall))
        out["steps_to_final"] = float(np.mean([r[0] for r in reach]))
        out["wall_to_final_s"] = float(np.mean([r[1] for r in reach]))
    return out


def build_report(budget: Budget, layout: dict, results: dict[str, dict], out_dir: Path, wall_s: float | None) -> dict:
    """Markdown + JSON + PNG curves from the per-job results."""
    report: dict = {"suite": "mini-chores", "budget": asdict(budget), "sections": {}}
    md = [f"# FLaRe on mini-CHORES — budget `{budget.name}`", "",
          f"Generated by `flare-train report --suite mini-chores --budget {budget.name}`. "
          f"{budget.steps:,} env steps per RL run, {len(budget.seeds)} seed(s), {budget.n_envs} envs, "
          f"lr {budget.lr:g}, critic warm-up {budget.critic_warmup_steps:,} steps; greedy evaluation on "
          f"{budget.eval_episodes} validation episodes per run; success in % with 95% CIs "
          f"(Wilson for one seed, normal over seeds otherwise); SEL in [0, 1]."]
    if wall_s is not None:
        md.append(f"Wall time of the run that produced these results: {wall_s / 60:.1f} min.")
    md.append("")
    for section, rows in layout.items():
        table: dict = {}
        for label, task, job in rows:
            if job.id in results:
                table.setdefault(label, {}).setdefault(task, []).append(results[job.id])
        agg = {lab: {t: aggregate(rs) for t, rs in by_task.items()} for lab, by_task in table.items()}
        report["sections"][section] = agg
        tasks = list(dict.fromkeys(t for _, t, _ in rows))
        md += _section_md(section, budget, agg, tasks)
        _plot(section, table, tasks, out_dir / f"curves_{section}.png")
        md += [f"![{section} learning curves](curves_{section}.png)", ""]
    missing = sorted({j.id for rows in layout.values() for _, _, j in rows} - set(results))
    if missing:
        md += [f"**Missing runs ({len(missing)}):** " + ", ".join(missing), ""]
    report["missing"] = missing
    (out_dir / "report.md").write_text("\n".join(md) + "\n")
    (out_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


TITLES = {"table1": "Table I analogue: demonstration families",
          "ablations": "Fig. 6 analogue: ablations",
          "table2": "Table II analogue: unseen families (no demonstrations)",
          "embodiment": "New embodiment (paper Q4): sim_locobot on objectnav"}


def _section_md(section: str, budget: Budget, agg: dict, tasks: list[str]) -> list[str]:
    md = [f"## {TITLES[section]}", ""]
    if section == "ablations":
        md[-1:] = [f"Family: `{budget.ablation_task}`.", ""]
    md += ["| row | " + " | ".join(f"{t} success | {t} SEL" for t in tasks) + " | mean success |",
           "|---|" + "---|---|" * len(tasks) + "---|"]
    for label, by_task in agg.items():
        cells = []
        for t in tasks:
            a = by_task.get(t)
            if a is None:
                cells += ["–", "–"]
            else:
                lo, hi = a["success_ci"]
                cells += [f"{100 * a['success']:.1f} [{100 * lo:.0f}, {100 * hi:.0f}]", f"{a['sel']:.3f}"]
        mean = np.mean([by_task[t]["success"] for t in tasks if t in by_task]) if by_task else float("nan")
        md.append(f"| {label} | " + " | ".join(cells) + f" | {100 * mean:.1f} |")
    md.append("")
    if section == "table1" and "FLaRe" in agg and "BC" in agg:
        d = np.mean([agg["FLaRe"][t]["success"] - agg["BC"][t]["success"] for t in tasks
                     if t in agg["FLaRe"] and t in agg["BC"]])
        md.append(f"FLaRe − BC, mean success over families: {100 * d:+.1f} points (target ≥ +20).")
    if section == "table2" and "FLaRe" in agg and "BC zero-shot" in agg:
        gains = {t: agg["FLaRe"][t]["success"] - agg["BC zero-shot"][t]["success"] for t in tasks
                 if t in agg["FLaRe"] and t in agg["BC zero-shot"]}
        met = sum(g >= 0.20 for g in gains.values())
        md.append("FLaRe − BC zero-shot: " + ", ".join(f"{t} {100 * g:+.1f}" for t, g in gains.items())
                  + f" points; ≥ +20 on {met} of {len(gains)} measured (target: at least two of {len(tasks)}).")
    if section in ("table1", "table2", "embodiment"):
        lines = []
        for t in tasks:
            f = agg.get("FLaRe", {}).get(t, {}).get("steps_to_90")
            s = agg.get("scratch-sparse", {}).get(t, {}).get("steps_to_90")
            ratio = f"{s / f:.1f}×" if f and s else "n/a"
            fmt = lambda x: f"{x:,.0f}" if x else "not reached"  # noqa: E731
            lines.append(f"- {t}: FLaRe {fmt(f)}, scratch-sparse {fmt(s)} (scratch/FLaRe {ratio})")
        md += ["", "Env steps to 90% training success (smoothed over 3 updates):", *lines]
    if section == "ablations" and "FLaRe" in agg:
        t = budget.ablation_task
        base = agg["FLaRe"].get(t, {}).get("success")
        if base is not None:
            md += ["", "Direction (paper: every ablation is worse than FLaRe):"]
            for label in ABLATIONS:
                a = agg.get(label, {}).get(t)
                if a is not None:
                    lo, hi = agg["FLaRe"][t]["success_ci"]
                    verdict = ("worse" if a["success"] < base else "not worse")
                    sig = "" if (a["success_ci"][1] < lo or a["success_ci"][0] > hi) else " (CIs overlap)"
                    md.append(f"- {label}: {100 * a['success']:.1f}% vs {100 * base:.1f}% → {verdict}{sig}")
    if section == "embodiment":
        md += ["", "Steps and training wall time to the final training success:"]
        for label in ("FLaRe", "scratch-sparse"):
            a = agg.get(label, {}).get("objectnav")
            if a and a.get("final_train_success") is not None and a["final_train_success"] <= 0:
                md += [f"- {label}: no successful training episode at the end of the run "
                       f"({budget.steps:,} steps, {a['train_wall_s'] / 60:.1f} min)."]
            elif a and a.get("final_train_success") is not None:
                md += [f"- {label}: final training success {100 * a['final_train_success']:.1f}% (smoothed), "
                       f"first reached after {a['steps_to_final']:,.0f} env steps and "
                       f"{a['wall_to_final_s'] / 60:.1f} min of training wall time "
                       f"(whole run: {budget.steps:,} steps, {a['train_wall_s'] / 60:.1f} min)."]
    md.append("")
    return md


def _plot(section: str, table: dict, tasks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        for label, by_task in table.items():
            recs = [r for r in by_task.get(t, []) if r.get("curve")]
            if recs:
                for i, r in enumerate(recs):
                    x, y = smooth(r["curve"])
                    ax.plot(x, 100 * y, label=label if i == 0 else None, color=_color(label))
            elif by_task.get(t):  # an eval-only row: a horizontal line at its success
                ax.axhline(100 * by_task[t][0]["eval"]["success"]["mean"], ls="--", color="grey", label=label)
        ax.set_title(t)
        ax.set_xlabel("env steps")
        ax.set_ylabel("training success % (smoothed)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _color(label: str) -> str:
    palette = {"FLaRe": "C0", "scratch-sparse": "C1", "scratch-dense": "C2", "SB3 PPO (scratch)": "C3",
               "entropy 0.01": "C4", "lr x10": "C5", "shared actor/critic": "C6", "no critic warm-up": "C7"}
    return palette.get(label, "C8")


# ------------------------------------------------------------------------------------------------- CLI
def load_results(results_dir: Path, budget: Budget, jobs: list[Job]) -> dict[str, dict]:
    """Cached results whose spec matches the job as planned now (a changed budget re-runs the job)."""
    out = {}
    for job in jobs:
        p = results_dir / "runs" / f"{job.id}.json"
        if p.exists():
            rec = json.loads(p.read_text())
            if rec.get("spec") == job.spec_hash(budget):
                out[job.id] = rec
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flare-train report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="mini-chores", choices=("mini-chores",))
    p.add_argument("--budget", default="small", choices=sorted(BUDGETS),
                   help="small: 10,240 env steps per RL run, 1 seed, 80 eval episodes (41.5 min on 2 cores); "
                        "cpu: 131k steps x 2 seeds, 200 eval episodes, the CPU FLaRe recipe (~12.5 h on 2 cores, "
                        "run it job by job with --jobs); full: 300k steps x 3 seeds, 500 eval episodes; smoke: "
                        "seconds, checks the plumbing (default small)")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    p.add_argument("--results", default="", help="default results/mini-chores-<budget>")
    p.add_argument("--runs", default="", help="run directories (checkpoints; not committed); "
                                               "default runs/report/mini-chores-<budget>")
    p.add_argument("--workers", type=int, default=0, help="parallel jobs (default: the budget's)")
    p.add_argument("--only-report", action="store_true", help="train nothing; build the report from cached results")
    p.add_argument("--jobs", nargs="+", metavar="GLOB",
                   help="run only the jobs whose id matches one of these patterns (e.g. 'flare-objectnav-*'; ids are "
                        "<row>-<task>-<embodiment>-s<seed>, see --list); the report still covers every cached job")
    p.add_argument("--list", action="store_true", help="print every job id with its state (cached / to run) and exit")
    p.add_argument("--run-job", help=argparse.SUPPRESS)  # internal: one job in a child process
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    budget = BUDGETS[a.budget]
    results_dir = Path(a.results or f"results/mini-chores-{budget.name}")
    runs_dir = Path(a.runs or f"runs/report/mini-chores-{budget.name}")
    if a.run_job:
        job = Job(**json.loads(a.run_job))
        rec = run_job(job, budget, runs_dir / job.id)
        tmp = results_dir / "runs" / f".{job.id}.json.tmp"
        tmp.write_text(json.dumps(rec, indent=1) + "\n")
        os.replace(tmp, results_dir / "runs" / f"{job.id}.json")
        return 0
    if not Path(BC_BUNDLE, "policy.json").exists():
        raise SystemExit(f"flare-train report: {BC_BUNDLE} not found; run from the repository root")
    layout = plan(budget, [s for s in SECTIONS if s in a.sections])
    jobs = list({j.id: j for rows in layout.values() for _, _, j in rows}.values())
    done = load_results(results_dir, budget, jobs)
    todo = [j for j in jobs if j.id not in done]
    if a.list:
        for j in jobs:
            print(f"{j.id:50s} {'cached' if j.id in done else 'to run'}")
        return 0
    (results_dir / "runs").mkdir(parents=True, exist_ok=True)
    if a.jobs:
        todo = [j for j in todo if any(fnmatch.fnmatchcase(j.id, g) for g in a.jobs)]
    print(f"report {budget.name}: {len(jobs)} jobs, {len(done)} cached, {len(todo)} to run", flush=True)
    t0 = time.perf_counter()
    failed = []
    if todo and not a.only_report:
        from tqdm import tqdm

        workers = a.workers or budget.workers
        # longest first (RL before evals) so the parallel workers finish together
        todo.sort(key=lambda j: (j.kind == "eval", j.kind == "sb3"))
        bar = tqdm(total=len(todo), desc="report jobs", unit="job")

        def launch(job: Job) -> tuple[Job, int]:
            log = runs_dir / job.id / "job.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "flare_training.report", "--budget", budget.name, "--results",
                   str(results_dir), "--runs", str(runs_dir), "--run-job", json.dumps(asdict(job))]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            with open(log, "a") as f:
                rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
            return job, rc

        with ThreadPoolExecutor(workers) as pool:
            for fut in as_completed([pool.submit(launch, j) for j in todo]):
                job, rc = fut.result()
                bar.update(1)
                if rc != 0:
                    failed.append(job.id)
                    tqdm.write(f"job {job.id} failed (exit {rc}); see {runs_dir / job.id / 'job.log'}")
        bar.close()
        done = load_results(results_dir, budget, jobs)
    wall = time.perf_counter() - t0 if todo and not a.only_report else None
    timing = results_dir / "timing.json"
    if wall is not None:
        prev = json.loads(timing.read_text()) if timing.exists() else {"sessions": []}
        prev["sessions"].append({"jobs_run": len(todo), "wall_s": round(wall, 1)})
        timing.write_text(json.dumps(prev, indent=1) + "\n")
    total_wall = sum(s["wall_s"] for s in json.loads(timing.read_text())["sessions"]) if timing.exists() else None
    report = build_report(budget, layout, done, results_dir, total_wall)
    print(f"report written to {results_dir}/report.md ({len(done)}/{len(jobs)} jobs"
          + (f", {len(report['missing'])} missing" if report["missing"] else "") + ")")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
