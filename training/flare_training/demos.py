"""`flare-train demos`: generate expert demonstrations for mini-CHORES tasks.

Output directory layout (scales to >= 100k episodes; never holds more than one shard per worker in memory)::

    DIR/index.json               task, parameters, shard list, counts, seeds (rewritten after every shard)
    DIR/<task>-00000.npz         one shard: up to --shard-size episodes of one task, concatenated

Shard members: rgb (N,56,56,3) uint8, action (N,) uint8 (index into SIM_ACTIONS), in_hand (N,) uint8,
step (N,) int16, ep_offsets (E+1,) int64 (episode e = rows ep_offsets[e]:ep_offsets[e+1]), seed (E,) int64,
expert_length (E,) int32, goal (E,) str, task (E,) str, meta (json str). Observations are stored *before* each
action (BabyAI convention), so the last row of an episode is the observation on which the expert said `end`.

Seeds: shard k of a task tries the seeds split_base + seed_offset + k * 2 * shard_size onward, in order, until it
has its episodes; seeds on which the expert hangs (watchdog), raises or fails are skipped and counted. Every
shard's seed range is disjoint, so the dataset is deterministic and a rerun resumes: complete shards (checked
against their stored metadata) are kept; a missing or partial shard is regenerated and written atomically
(temp file + rename).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import queue as queue_mod
import sys
import time

import numpy as np

FORMAT = "mini-chores-demos/1"
INDEX = "index.json"
STRIDE = 2  # seed range per shard = STRIDE * shard_size


def build_parser() -> argparse.ArgumentParser:
    from flare_training.envs import DEMO_TASKS, TASKS
    p = argparse.ArgumentParser(
        prog="flare-train demos",
        description="Generate expert demonstrations (shortest-path expert with explicit end/sub_done) for "
                    "mini-CHORES tasks into sharded .npz files. Resumable: rerun the same command to continue.",
        epilog=f"demo tasks: {', '.join(DEMO_TASKS)} ('all' = all four). other tasks: "
               f"{', '.join(t for t in TASKS if t not in DEMO_TASKS)} (held out: not meant for BC).")
    p.add_argument("--task", required=True,
                   help="task name, comma-separated names, or 'all' (the four demo families)")
    p.add_argument("--episodes", type=int, required=True, help="episodes per task")
    p.add_argument("--out", required=True, help="output directory (created; reused to resume)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)),
                   help="worker processes (default: number of CPUs)")
    p.add_argument("--split", default="train", choices=("train", "val", "test"), help="seed split (default train)")
    p.add_argument("--seed-offset", type=int, default=0, help="first seed = split start + offset (default 0)")
    p.add_argument("--shard-size", type=int, default=250, help="episodes per shard (default 250)")
    p.add_argument("--watchdog", type=float, default=3.0, help="per-episode expert time limit in s (default 3)")
    p.add_argument("--embodiment", default="sim", choices=("sim", "sim_locobot"), help="default sim")
    p.add_argument("--render-tile", type=int, default=8, help="pixels per grid cell (default 8: 56x56 frames)")
    p.add_argument("--no-compress", action="store_true", help="store shards uncompressed (faster to read, ~50-70x bigger)")
    p.add_argument("--allow-heldout", action="store_true", help="allow demos of the held-out families")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def resolve_tasks(spec: str, allow_heldout: bool = False) -> list[str]:
    from flare_training.envs import DEMO_TASKS, TASKS
    names = list(DEMO_TASKS) if spec == "all" else [t.strip() for t in spec.split(",") if t.strip()]
    for t in names:
        if t not in TASKS:
            raise SystemExit(f"flare-train demos: unknown task {t!r}; known: {', '.join(TASKS)}")
        if TASKS[t].heldout and not allow_heldout:
            raise SystemExit(f"flare-train demos: {t!r} is a held-out family (never in demos); "
                             "pass --allow-heldout to generate it anyway")
    return names


def plan_shards(task: str, episodes: int, params: dict) -> list[dict]:
    from flare_training.envs import SPLITS
    size = params["shard_size"]
    base = SPLITS[params["split"]][0] + params["seed_offset"]
    jobs = []
    for k in range((episodes + size - 1) // size):
        n = min(size, episodes - k * size)
        start = base + k * STRIDE * size
        jobs.append(dict(task=task, shard=k, episodes=n, seed_start=start, seed_limit=start + STRIDE * size,
                         file=f"{task}-{k:05d}.npz"))
    if jobs and jobs[-1]["seed_limit"] > SPLITS[params["split"]][1]:
        raise SystemExit("flare-train demos: not enough seeds left in the split for that many episodes")
    return jobs


def _params(args) -> dict:
    return dict(split=args.split, seed_offset=args.seed_offset, shard_size=args.shard_size,
                embodiment=args.embodiment, render_tile=args.render_tile, stride=STRIDE)


def read_shard_meta(path: str) -> dict | None:
    """The metadata of a complete shard file, or None if it is missing/unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["meta"]))
    except Exception:
        return None


def _shard_done(out: str, job: dict, params: dict) -> dict | None:
    meta = read_shard_meta(os.path.join(out, job["file"]))
    if meta is None:
        return None
    want = dict(params, task=job["task"], shard=job["shard"], seed_start=job["seed_start"], format=FORMAT)
    if any(meta.get(k) != v for k, v in want.items()) or meta.get("episodes") != job["episodes"]:
        return None
    return meta


# ---------------------------------------------------------------------------------------------- worker side
_PROGRESS = None


def _init_worker(progress_queue):
    global _PROGRESS
    _PROGRESS = progress_queue
    sys.stdout = open(os.devnull, "w")  # minigrid level generation may print "Sampling rejected: ..."


def generate_shard(job: dict, out: str, params: dict, watchdog_s: float, compress: bool,
                   progress=None) -> dict:
    """Generate one shard and write it atomically. `progress(n)` is called as episodes finish."""
    from flare_training.envs import make_env
    from flare_training.expert import run_expert

    report = progress or (lambda n: _PROGRESS.put(n) if _PROGRESS is not None else None)
    env = make_env(job["task"], embodiment=params["embodiment"], render_tile=params["render_tile"])
    rgb, action, in_hand, step, lengths, seeds, goals = [], [], [], [], [], [], []
    skipped = {"hung": 0, "failed": 0, "error": 0}
    t0 = time.time()
    seed = job["seed_start"]
    pending = 0
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        while len(lengths) < job["episodes"]:
            if seed >= job["seed_limit"]:
                raise RuntimeError(f"{job['file']}: seed range exhausted ({skipped})")
            ep, status = run_expert(env, seed, watchdog_s, record=True)
            if ep is None:
                skipped[status] += 1
            else:
                rgb.append(ep.rgb)
                action.append(ep.action)
                in_hand.append(ep.in_hand)
                step.append(ep.step.astype(np.int16))
                lengths.append(ep.expert_length)
                seeds.append(seed)
                goals.append(ep.goal)
                pending += 1
                if pending >= 5:
                    report(pending)
                    pending = 0
            seed += 1
    if pending:
        report(pending)
    offsets = np.zeros(len(lengths) + 1, np.int64)
    offsets[1:] = np.cumsum(lengths)
    meta = dict(params, format=FORMAT, task=job["task"], shard=job["shard"], seed_start=job["seed_start"],
                seed_end=int(seed), episodes=len(lengths), steps=int(offsets[-1]), skipped=skipped,
                seconds=round(time.time() - t0, 3))
    arrays = dict(rgb=np.concatenate(rgb), action=np.concatenate(action), in_hand=np.concatenate(in_hand),
                  step=np.concatenate(step), ep_offsets=offsets, seed=np.asarray(seeds, np.int64),
                  expert_length=np.asarray(lengths, np.int32), goal=np.asarray(goals, dtype=str),
                  task=np.asarray([job["task"]] * len(lengths), dtype=str), meta=np.asarray(json.dumps(meta)))
    path = os.path.join(out, job["file"])
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    (np.savez_compressed if compress else np.savez)(tmp, **arrays)
    os.replace(tmp, path)
    return meta


def _run_job(args):
    job, out, params, watchdog_s, compress = args
    return generate_shard(job, out, params, watchdog_s, compress)


# ---------------------------------------------------------------------------------------------- main side
def write_index(out: str, targets: dict, params: dict, metas: dict) -> dict:
    index = dict(format=FORMAT, params=params, tasks={})
    for task, target in targets.items():
        shards = sorted((m for m in metas.values() if m["task"] == task), key=lambda m: m["shard"])
        skipped = {k: sum(m["skipped"][k] for m in shards) for k in ("hung", "failed", "error")}
        n = sum(m["episodes"] for m in shards)
        steps = sum(m["steps"] for m in shards)
        tried = n + sum(skipped.values())
        index["tasks"][task] = dict(
            target_episodes=target, complete=(n == target), episodes=n, steps=steps,
            mean_expert_length=round(steps / n, 3) if n else None,
            expert_success=round(n / tried, 5) if tried else None, skipped=skipped,
            shards=[dict(file=f"{task}-{m['shard']:05d}.npz", episodes=m["episodes"], steps=m["steps"],
                         seed_start=m["seed_start"], seed_end=m["seed_end"], skipped=m["skipped"])
                    for m in shards])
    tmp = os.path.join(out, f"{INDEX}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(index, f, indent=1)
    os.replace(tmp, os.path.join(out, INDEX))
    return index


def open_output(out: str, params: dict, wanted: dict, prog: str) -> tuple[dict, dict, list]:
    """Create `out`, or reopen it to resume: a directory made with other parameters is refused, an interrupted
    run's temp files are removed, tasks generated there earlier stay in the index. wanted: episodes per task
    to have. Returns (targets per task, metadata of the complete shards by file, jobs still to run) and
    writes the index."""
    os.makedirs(out, exist_ok=True)
    old = os.path.join(out, INDEX)
    targets = {}
    if os.path.exists(old):
        with open(old) as f:
            prev = json.load(f)
        if prev.get("params") != params:
            raise SystemExit(f"{prog}: {out} holds data made with other parameters "
                             f"{prev.get('params')}; use another --out or the same options")
        targets = {t: v["target_episodes"] for t, v in prev.get("tasks", {}).items()}
    for name in os.listdir(out):  # leftovers of an interrupted run
        if ".tmp-" in name:
            os.remove(os.path.join(out, name))
    targets.update(wanted)
    metas, jobs = {}, []
    for task, n in targets.items():
        for job in plan_shards(task, n, params):
            meta = _shard_done(out, job, params)
            if meta is not None:
                metas[job["file"]] = meta
            elif task in wanted:
                jobs.append(job)
    write_index(out, targets, params, metas)
    return targets, metas, jobs


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.episodes < 1 or args.shard_size < 1 or args.workers < 1:
        raise SystemExit("flare-train demos: --episodes, --shard-size and --workers must be >= 1")
    tasks = resolve_tasks(args.task, args.allow_heldout)
    if args.embodiment == "sim_locobot":
        from flare_training.envs import TASKS
        bad = [t for t in tasks if not TASKS[t].nav_only]
        if bad:
            raise SystemExit(f"flare-train demos: sim_locobot cannot do {bad}")
    out = args.out
    params = _params(args)
    targets, metas, jobs = open_output(out, params, {t: args.episodes for t in tasks}, "flare-train demos")
    done_eps = sum(m["episodes"] for m in metas.values() if m["task"] in tasks)
    total = args.episodes * len(tasks)
    if not args.quiet:
        print(f"flare-train demos: {', '.join(tasks)} x {args.episodes} episodes -> {out} "
              f"({len(jobs)} shard(s) to generate, {done_eps} episode(s) already done, {args.workers} worker(s))",
              file=sys.stderr)

    from tqdm import tqdm
    bar = tqdm(total=total, initial=done_eps, unit="ep", disable=args.quiet, dynamic_ncols=True, file=sys.stderr,
               mininterval=0.2 if sys.stderr.isatty() else 5.0)
    t0 = time.time()
    new_eps = 0
    try:
        if args.workers == 1 or len(jobs) <= 1:
            for job in jobs:
                meta = generate_shard(job, out, params, args.watchdog, not args.no_compress, progress=bar.update)
                metas[job["file"]] = meta
                new_eps += meta["episodes"]
                write_index(out, targets, params, metas)
        else:
            ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            q = ctx.Queue()
            with ctx.Pool(min(args.workers, len(jobs)), initializer=_init_worker, initargs=(q,)) as pool:
                pending = [pool.apply_async(_run_job, ((job, out, params, args.watchdog, not args.no_compress),))
                           for job in jobs]
                while pending:
                    try:
                        bar.update(q.get(timeout=0.2))
                    except queue_mod.Empty:
                        pass
                    for r in [r for r in pending if r.ready()]:
                        pending.remove(r)
                        meta = r.get()  # re-raises a worker error
                        metas[f"{meta['task']}-{meta['shard']:05d}.npz"] = meta
                        new_eps += meta["episodes"]
                        write_index(out, targets, params, metas)
                while True:  # drain the progress queue
                    try:
                        bar.update(q.get_nowait())
                    except queue_mod.Empty:
                        break
    except KeyboardInterrupt:
        bar.close()
        print("\ninterrupted: completed shards are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    bar.close()
    dt = time.time() - t0
    index = write_index(out, targets, params, metas)
    if not args.quiet:
        for task in tasks:
            t = index["tasks"][task]
            print(f"  {task:10s} episodes={t['episodes']} steps={t['steps']} mean_len={t['mean_expert_length']} "
                  f"expert_success={t['expert_success']} skipped={t['skipped']}", file=sys.stderr)
        if new_eps:
            print(f"  generated {new_eps} episodes in {dt:.1f} s ({new_eps / dt:.1f} demos/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
