"""Learning curves of `flare-train ppo` runs: success against env steps, with the starting policy's level.

    flare-train curves runs/ppo_objectnav_cpu runs/ppo_objectnav_lr5e-5 --bc 0.31 --out curve.png

Reads each run's `<logdir>/metrics.jsonl`: the training success rate of the episodes finished in each update
(sampled actions, as collected; smoothed over `--smooth` updates) as a line, and the validation evaluations
(`eval/success`, every `eval_every` updates) as markers. `--bc` draws the BC bundle's validation success as
a dashed line (FLaRe's figures compare against the IL starting point). `--end-to-end` draws stages of one
policy (each run initialised from the previous run's bundle) one after another on a common step axis:

    flare-train curves runs/stage1 runs/stage2 runs/stage3 --end-to-end --bc 0.24 --out stages.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def read_metrics(logdir) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(training success per update, validation success per evaluation) as (global_step, value) pairs."""
    path = Path(logdir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (not a flare-train ppo logdir)")
    train, evals = [], []
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if "charts/success_rate" in rec:
                train.append((int(rec["global_step"]), float(rec["charts/success_rate"])))
            if "eval/success" in rec:
                evals.append((int(rec["global_step"]), float(rec["eval/success"])))
    return train, evals


def plot(runs: list[str], out, bc: float | None = None, labels: list[str] | None = None, smooth: int = 5,
         title: str = "", end_to_end: bool = False) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    many = len(runs) > 4  # then the legend goes beside the axes, where it hides no curve
    fig, ax = plt.subplots(figsize=(9.5 if many else 7, 4))
    offset = 0  # end to end: env steps of the earlier stages
    for i, run in enumerate(runs):
        train, evals = read_metrics(run)
        if end_to_end:
            train = [(step + offset, v) for step, v in train]
            evals = [(step + offset, v) for step, v in evals]
            offset = max([step for step, _ in train + evals], default=offset)
        label = labels[i] if labels and i < len(labels) else Path(run).name
        color = f"C{i}"
        if train:
            x, y = np.array(train).T
            k = max(1, min(smooth, len(y)))
            ys = np.convolve(y, np.ones(k) / k, mode="valid")
            ax.plot(x[k - 1:], 100 * ys, color=color, alpha=0.6, label=label)
        if evals:
            x, y = np.array(evals).T
            ax.plot(x, 100 * y, "o-", color=color, label=None if train else label)
    # one entry per run; the line styles are explained once
    ax.plot([], [], color="k", alpha=0.6, label="training episodes (sampled)")
    ax.plot([], [], "o-", color="k", label="validation")
    if bc is not None:
        ax.axhline(100 * bc, color="k", ls="--", lw=1, label="BC (validation)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("success (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    if many:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    else:
        ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="flare-train curves", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="flare-train ppo logdirs")
    p.add_argument("--out", required=True, help="PNG file")
    p.add_argument("--bc", type=float, help="BC validation success in [0, 1] (dashed line)")
    p.add_argument("--labels", nargs="+", help="one label per run (default: directory names)")
    p.add_argument("--smooth", type=int, default=5, help="updates averaged in the training curve (default 5)")
    p.add_argument("--title", default="")
    p.add_argument("--end-to-end", action="store_true",
                   help="the runs are stages of one policy, in order: draw each from the previous one's last env step")
    a = p.parse_args(argv)
    try:
        print(plot(a.runs, a.out, a.bc, a.labels, a.smooth, a.title, a.end_to_end))
    except FileNotFoundError as e:
        p.exit(2, f"flare-train curves: {e}\n")
    return 0
