"""`flare-train dagger`: the learner drives, the expert labels (DAgger) -> a demo directory for BC.

Behaviour cloning only ever sees the states the expert visits. The expert walks up to the target and nowhere
else, so "an object in front of me" is always followed by `end` (or `pickup`) in its demonstrations, and a
cloned policy ends at whatever object it reaches first. Here a policy bundle runs the episodes (sampled
actions, a KV-cache per env as on the robot) while the shortest-path expert, replanning from every state the
learner reaches, provides the label of each step: at a distractor it says "turn away", not `end`.

What is executed at each step (the label is always the expert's action):
  * the learner's action when it is a navigation action (move / rotate / toggle) or agrees with the expert;
  * the expert's action otherwise, i.e. in place of a wrong `end`, `sub_done`, `pickup` or `dropoff` (the
    state is still labelled; the episode goes on instead of ending on the learner's mistake, and the expert
    never has to recover from holding a wrong object);
  * the expert's action with probability --beta (DAgger's mixture; default 0).

The output is a `flare-train demos` directory (same index and shard format, so `flare-train bc` reads it
beside the expert demonstrations), with one more shard member, `executed` (N,) uint8: the action actually
executed at each row (the policy's previous-action input), which differs from the label `action` wherever the
learner went its own way. `expert_length` holds each episode's row count. Seeds come from the train split
starting at --seed-offset (default 500,000,000: disjoint from `flare-train demos`). Resumable per shard.

    flare-train dagger --bundle models/sim_tiny_bc --task objectnav,fetch,pickup --episodes 1500 \\
        --out data/dagger_r1
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import numpy as np
import torch

from .demos import FORMAT, open_output, resolve_tasks, write_index
from .expert import LEFT, MOVE, RIGHT, TOGGLE

LEARNER_MAY_EXECUTE = frozenset((MOVE, LEFT, RIGHT, TOGGLE))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flare-train dagger", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, help="policy bundle that drives the episodes")
    p.add_argument("--task", required=True, help="task name, comma-separated names, or 'all' (the four demo families)")
    p.add_argument("--episodes", type=int, required=True, help="episodes per task")
    p.add_argument("--out", required=True, help="output directory (created; reused to resume)")
    p.add_argument("--seed-offset", type=int, default=500_000_000,
                   help="first train seed (default 500000000, disjoint from flare-train demos)")
    p.add_argument("--shard-size", type=int, default=250, help="episodes per shard (default 250)")
    p.add_argument("--beta", type=float, default=0.0,
                   help="probability of executing the expert's action instead of the learner's (default 0)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--sample", dest="greedy", action="store_false", default=False,
                   help="sample the learner's actions (default)")
    g.add_argument("--greedy", dest="greedy", action="store_true", help="argmax actions")
    p.add_argument("--envs", type=int, default=16, help="environments stepped together (default 16)")
    p.add_argument("--kv-window", type=int, default=1000, help="KV-cache window in steps (default 1000)")
    p.add_argument("--watchdog", type=float, default=1.0,
                   help="expert time limit per step in s; an episode whose expert hangs or raises is dropped (default 1)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the learner's action sampling (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


class _Slot:
    """One env of the batch: its episode's rows so far, its expert and what it last executed."""

    def __init__(self, env):
        self.env = env
        self.obs = None
        self.expert = None
        self.last = None
        self.seed = -1
        self.rows: dict[str, list] = {}

    def start(self, seed: int) -> None:
        from .expert import Expert

        self.seed = seed
        self.obs, _ = self.env.reset(seed=seed)
        self.expert = Expert(self.env)
        self.last = None
        self.rows = {k: [] for k in ("rgb", "action", "executed", "in_hand", "step")}


@torch.inference_mode()
def collect_shard(bundle, job: dict, params: dict, args, bank, progress=None) -> dict:
    """Run the learner on seeds job['seed_start']... until job['episodes'] episodes are recorded; write the
    shard atomically and return its metadata."""
    from .agent import make_input
    from .envs import make_env
    from .expert import ExpertTimeout, watchdog

    task = job["task"]
    model = bundle.model.eval()
    mask = bundle.action_mask()
    n_envs = max(1, min(args.envs, job["episodes"]))
    slots = [_Slot(make_env(task, embodiment=params["embodiment"], render_tile=params["render_tile"]))
             for _ in range(n_envs)]
    cache = model.new_cache(n_envs, args.kv_window)
    gen = torch.Generator().manual_seed(args.seed + job["seed_start"])
    rng = np.random.default_rng(args.seed + job["seed_start"])
    start_idx = bundle.config.n_actions
    prev = np.full(n_envs, start_idx)
    done: list[tuple[int, str, dict]] = []  # (seed, goal, rows)
    skipped = {"hung": 0, "error": 0}
    stats = {"steps": 0, "learner_executed": 0, "overridden": 0, "success": 0}
    seed = job["seed_start"]
    live = [True] * n_envs
    t0 = time.time()

    def start(i):
        nonlocal seed
        if len(done) + sum(live) - (1 if live[i] else 0) >= job["episodes"]:
            live[i] = False  # enough episodes are finished or running
            return
        if seed >= job["seed_limit"]:
            raise RuntimeError(f"{job['file']}: seed range exhausted")
        slots[i].start(seed)
        seed += 1
        prev[i] = start_idx
        cache.reset(torch.tensor([i]))
        live[i] = True

    for i in range(n_envs):
        start(i)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        while any(live):
            idx = [i for i in range(n_envs) if live[i]]
            src = [i if live[i] else idx[0] for i in range(n_envs)]  # idle slots repeat a live one (ignored)
            obs = [slots[i].obs for i in src]
            inp = make_input(np.stack([o["rgb"] for o in obs])[:, None],
                             bank.index([o["goal"] for o in obs])[:, None], prev[src][:, None],
                             [[int(o["in_hand"])] for o in obs], [[int(o["step"])] for o in obs], bank)
            logits, _, _ = model(inp, cache=cache, action_mask=mask)
            probs = torch.softmax(logits[:, 0].float(), -1)
            learner = probs.argmax(-1) if args.greedy else torch.multinomial(probs, 1, generator=gen)[:, 0]
            for i in idx:
                sl = slots[i]
                try:
                    with watchdog(args.watchdog):
                        label = sl.expert.act(sl.last)
                except ExpertTimeout:
                    skipped["hung"] += 1
                    start(i)
                    continue
                except Exception:  # the BabyAI bot asserts on situations it cannot handle
                    skipped["error"] += 1
                    start(i)
                    continue
                a = int(learner[i])
                if rng.random() < args.beta or (a != label and a not in LEARNER_MAY_EXECUTE):
                    stats["overridden"] += int(a != label)
                    a = label
                else:
                    stats["learner_executed"] += 1
                o = sl.obs
                for k, v in (("rgb", o["rgb"]), ("action", label), ("executed", a), ("in_hand", int(o["in_hand"])),
                             ("step", int(o["step"]))):
                    sl.rows[k].append(v)
                sl.obs, _, term, trunc, info = sl.env.step(a)
                sl.last, prev[i] = a, a
                stats["steps"] += 1
                if term or trunc:
                    stats["success"] += int(bool(info.get("success")))
                    done.append((sl.seed, sl.obs["goal"], sl.rows))
                    if progress:
                        progress(1)
                    start(i)
    done.sort(key=lambda d: d[0])
    lengths = [len(r["action"]) for _, _, r in done]
    offsets = np.zeros(len(done) + 1, np.int64)
    offsets[1:] = np.cumsum(lengths)
    cat = lambda k, dt: np.concatenate([np.asarray(r[k], dt) for _, _, r in done])  # noqa: E731
    meta = dict(params, format=FORMAT, task=task, shard=job["shard"], seed_start=job["seed_start"],
                seed_end=int(seed), episodes=len(done), steps=int(offsets[-1]),
                skipped=dict(skipped, failed=0), episode_success=stats["success"],
                learner_executed=stats["learner_executed"], overridden=stats["overridden"],
                seconds=round(time.time() - t0, 3))
    arrays = dict(rgb=np.stack([f for _, _, r in done for f in r["rgb"]]).astype(np.uint8),
                  action=cat("action", np.uint8), executed=cat("executed", np.uint8),
                  in_hand=cat("in_hand", np.uint8), step=cat("step", np.int16), ep_offsets=offsets,
                  seed=np.asarray([s for s, _, _ in done], np.int64), expert_length=np.asarray(lengths, np.int32),
                  goal=np.asarray([g for _, g, _ in done], dtype=str), task=np.asarray([task] * len(done), dtype=str),
                  meta=np.asarray(json.dumps(meta)))
    path = os.path.join(args.out, job["file"])
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return meta


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.episodes < 1 or args.shard_size < 1 or args.envs < 1 or not 0.0 <= args.beta <= 1.0:
        raise SystemExit("flare-train dagger: --episodes, --shard-size, --envs must be >= 1 and --beta in [0, 1]")
    from flare_policy.bundle import load_bundle
    from flare_policy.text import TextEncoder
    from tqdm import tqdm

    from .agent import GoalBank

    torch.set_num_threads(args.threads)
    tasks = resolve_tasks(args.task)
    bundle = load_bundle(args.bundle)
    if bundle.embodiment.name != "sim":
        raise SystemExit(f"flare-train dagger: needs a `sim` bundle, {args.bundle} is {bundle.embodiment.name!r}")
    params = dict(split="train", seed_offset=args.seed_offset, shard_size=args.shard_size, embodiment="sim",
                  render_tile=8, stride=2, dagger=dict(bundle=str(args.bundle), beta=args.beta, greedy=args.greedy,
                                                       kv_window=args.kv_window))
    targets, metas, jobs = open_output(args.out, params, {t: args.episodes for t in tasks}, "flare-train dagger")
    bank = GoalBank(TextEncoder(bundle.text_encoder["kind"], bundle.text_encoder.get("path")))
    total = args.episodes * len(tasks)
    done_eps = sum(m["episodes"] for m in metas.values() if m["task"] in tasks)
    print(f"flare-train dagger: {args.bundle} drives {', '.join(tasks)} x {args.episodes} episodes -> {args.out} "
          f"({len(jobs)} shard(s) to collect, {done_eps} episode(s) already done)", file=sys.stderr)
    bar = tqdm(total=total, initial=done_eps, unit="ep", disable=args.quiet, file=sys.stderr,
               mininterval=0.5 if sys.stderr.isatty() else 10.0)
    t0 = time.time()
    try:
        for job in jobs:
            meta = collect_shard(bundle, job, params, args, bank, progress=bar.update)
            metas[job["file"]] = meta
            write_index(args.out, targets, params, metas)
    except KeyboardInterrupt:
        bar.close()
        print("\ninterrupted: completed shards are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    bar.close()
    for task in tasks:
        ms = [m for m in metas.values() if m["task"] == task]
        eps, steps = sum(m["episodes"] for m in ms), sum(m["steps"] for m in ms)
        own = sum(m["learner_executed"] for m in ms)
        print(f"  {task:10s} episodes={eps} steps={steps} succeeded={sum(m['episode_success'] for m in ms)}"
              f" learner_executed={own / max(1, steps):.3f} overridden={sum(m['overridden'] for m in ms)}",
              file=sys.stderr)
    print(f"  {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
