"""Decision probe: does a policy's committing action depend on whether the object in front is the goal?

A bundle drives validation episodes greedily (PolicyRunner, exactly as on the robot). At every step where an
object is in the cell in front of the agent, the probability of the family's committing action is recorded:
`end` for objectnav, `pickup` for pickup and fetch (while nothing is held). The steps are split by how the object
relates to the goal: the goal itself, the same type in another colour, the same colour with another type, or both
different. A policy that grounds the goal commits on the first kind only; the AUC of that probability for "this
is the goal" summarises it (0.5: the goal text is ignored). The same-type, other-colour steps are also split by
(goal colour, colour in front), to show which colours the policy confuses.

    python -m flare_training.decision_probe --bundle models/sim_tiny_flare_objectnav --task objectnav --episodes 200
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .envs.levels import OBJ_TYPES

COMMIT = {"objectnav": "end", "pickup": "pickup", "fetch": "pickup"}
KINDS = ("goal", "same type, other colour", "same colour, other type", "both differ")


def relation(cell, level) -> int:
    """Index into KINDS of the object `cell` with respect to the level's goal description."""
    if cell in level.targets:
        return 0
    t = level.target_desc
    return 1 if cell.type == t.type else 2 if cell.color == t.color else 3


def probe(bundle, task: str, episodes: int, split: str = "val") -> dict:
    from flare_policy.runner import PolicyRunner

    from .envs import make_env
    from .envs.core import split_seeds

    runner = PolicyRunner(bundle, greedy=True)
    commit = bundle.actions.index(COMMIT[task])
    camera = bundle.cameras[0].name
    env = make_env(task)
    probs: list[list[float]] = [[] for _ in KINDS]
    taken: list[list[bool]] = [[] for _ in KINDS]
    pairs: dict[tuple[str, str], list[tuple[float, bool]]] = {}  # (goal colour, colour in front) -> (P, taken)
    successes = 0
    for seed in split_seeds(split, episodes):
        obs, _ = env.reset(seed=seed)
        level = env.env.unwrapped
        runner.start_episode(obs["goal"])
        done = False
        while not done:
            d = runner.act({camera: obs["rgb"]}, bool(obs["in_hand"]))
            cell = level.grid.get(*level.front_pos)
            if cell is not None and cell.type in OBJ_TYPES and not obs["in_hand"]:
                k = relation(cell, level)
                probs[k].append(d.probs[commit])
                taken[k].append(d.index == commit)
                if k == 1:
                    pairs.setdefault((level.target_desc.color, cell.color), []).append(
                        (d.probs[commit], d.index == commit))
            obs, _, term, trunc, info = env.step(d.index)
            done = term or trunc
        successes += bool(info.get("success"))
    pos = np.asarray(probs[0])
    neg = np.asarray([p for k in range(1, len(KINDS)) for p in probs[k]])
    auc = float("nan")
    if len(pos) and len(neg):  # P(a random goal step scores above a random other one), ties count half
        auc = float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
    return {"task": task, "split": split, "episodes": episodes, "action": COMMIT[task],
            "success": successes / episodes, "auc": auc,
            "kinds": {name: {"steps": len(probs[k]), "mean_prob": float(np.mean(probs[k])) if probs[k] else None,
                             "taken": float(np.mean(taken[k])) if taken[k] else None}
                      for k, name in enumerate(KINDS)},
            # most wrong commits first
            "colour_pairs": sorted(({"goal": g, "seen": c, "steps": len(v), "mean_prob": float(np.mean([q for q, _ in v])),
                                     "commits": int(sum(t for _, t in v))} for (g, c), v in pairs.items()),
                                   key=lambda e: (-e["commits"], -e["mean_prob"]))}


def goal_text_shares(text_encoder) -> dict[str, float]:
    """Share of the variance of mean-pooled goal features explained by each part of the ObjectNav phrasing (verb,
    article, colour, type), over every combination: does the goal text carry the colour at all?"""
    import itertools

    from minigrid.core.constants import COLOR_NAMES

    from .envs.levels import NAV_VERBS

    parts = list(itertools.product(NAV_VERBS, ("a", "the"), COLOR_NAMES, OBJ_TYPES))
    X = np.stack([text_encoder.encode(" ".join(p)).mean(0).numpy() for p in parts])
    X = X - X.mean(0)
    total = float((X ** 2).sum())
    out = {}
    for i, name in enumerate(("verb", "article", "colour", "type")):
        labels = np.array([p[i] for p in parts])
        out[name] = sum(float((X[labels == v].mean(0) ** 2).sum()) * int((labels == v).sum())
                        for v in set(labels)) / total
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m flare_training.decision_probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, help="policy bundle directory")
    p.add_argument("--task", default="objectnav", choices=sorted(COMMIT), help="family (default objectnav)")
    p.add_argument("--episodes", type=int, default=200, help="validation episodes (default 200)")
    p.add_argument("--split", default="val", choices=("val", "test", "train"))
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--goal-text", action="store_true",
                   help="also print how much of the pooled goal features' variance (the bundle's text encoder, "
                        "every ObjectNav phrasing) each part of the goal explains: verb, article, colour, type")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    a = p.parse_args(argv)
    import torch

    from flare_policy.bundle import BundleError, load_bundle

    torch.set_num_threads(a.threads)
    try:
        bundle = load_bundle(a.bundle)
    except BundleError as e:
        print(f"decision_probe: {e}", file=sys.stderr)
        return 2
    if COMMIT[a.task] not in bundle.actions:
        print(f"decision_probe: bundle {a.bundle} has no {COMMIT[a.task]!r} action", file=sys.stderr)
        return 2
    r = probe(bundle, a.task, a.episodes, a.split)
    print(f"{a.bundle} on {a.task} ({a.episodes} {a.split} episodes, greedy; success {100 * r['success']:.1f}%): "
          f"P({r['action']}) with an object in front")
    for name, k in r["kinds"].items():
        if k["steps"]:
            print(f"  {name:24s} {k['steps']:5d} steps  mean P {k['mean_prob']:.3f}  taken {k['taken']:.3f}")
    print(f"  AUC for 'the object in front is the goal': {r['auc']:.3f}")
    if r["colour_pairs"]:
        print("  same type, other colour, by (goal colour -> colour in front), most wrong commits first:")
        for e in r["colour_pairs"][:8]:
            print(f"    {e['goal']:>6s} -> {e['seen']:<6s} {e['steps']:4d} steps  mean P {e['mean_prob']:.3f}  "
                  f"committed {e['commits']}")
    if a.goal_text:
        from flare_policy.text import text_encoder_from_spec

        r["goal_text_variance"] = goal_text_shares(text_encoder_from_spec(bundle.text_encoder))
        print("pooled goal features, share of variance: "
              + ", ".join(f"{k} {v:.3f}" for k, v in r["goal_text_variance"].items()))
    if a.json:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
