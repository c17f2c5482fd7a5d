"""Evaluate a policy bundle on a mini-CHORES (or AI2-THOR, `--env ai2thor`) task: Success, SEL, episode length,
%Rooms with 95% CIs.

Environments run in a batch, each stepped through the decoder's KV-cache exactly as on the robot (one step
per action, cache reset at every new episode). Seeds come from a fixed split, so results are deterministic
for a given seed set.

    flare-train eval --bundle models/sim_tiny_bc --task objectnav --episodes 200 --split val --json
    flare-train eval --bundle BUNDLE --task objectnav --env ai2thor --env-config thor.yaml --episodes 200
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from flare_policy.bundle import load_bundle
from flare_policy.text import TextEncoder

from .agent import GoalBank, load_vision, make_input


def mean_ci(x) -> dict:
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    m = float(x.mean()) if n else float("nan")
    half = 1.96 * float(x.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": m, "ci95": [m - half, m + half], "n": n}


def wilson_ci(successes: int, n: int) -> dict:
    if n == 0:
        return {"mean": float("nan"), "ci95": [float("nan")] * 2, "n": 0}
    z, p = 1.96, successes / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return {"mean": p, "ci95": [max(0.0, c - h), min(1.0, c + h)], "n": n}


def _annotate(frame: np.ndarray, goal: str, action: str, step: int, scale: int = 4) -> np.ndarray:
    from PIL import Image, ImageDraw

    if frame.ndim == 4:  # several cameras (AI2-THOR): side by side
        frame = np.concatenate(list(frame), axis=1)
    img = Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST)
    canvas = Image.new("RGB", (img.width, img.height + 34), (20, 20, 20))
    canvas.paste(img, (0, 0))
    d = ImageDraw.Draw(canvas)
    d.text((3, img.height + 2), goal[:40], fill=(255, 255, 255))
    d.text((3, img.height + 18), f"t={step} {action}", fill=(255, 220, 90))
    return np.asarray(canvas)


def write_gif(frames, path) -> None:
    import imageio.v2 as imageio

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(str(path), frames, duration=0.2, loop=0)


@torch.inference_mode()
def evaluate(bundle, task: str, episodes: int, *, split: str = "val", greedy: bool = True, n_envs: int = 8,
             kv_window: int = 1000, seed_offset: int = 0, video_dir=None, n_videos: int = 3,
             text_encoder: TextEncoder | None = None, embodiment: str | None = None, progress: bool = True,
             threads: int | None = None, env: str = "minichores", env_config: str = "", vision=None,
             vision_encoder_path: str = "") -> dict:
    """env: "minichores" or "ai2thor" (then env_config is the AI2-THOR settings YAML). dinov2 bundles: `vision`
    (the frozen DINOv2), else loaded from the bundle's vision_encoder (or `vision_encoder_path`)."""
    from tqdm import tqdm

    from .envs import sel, split_seeds
    from .envs.backends import backend_env_kwargs, make_backend_env
    from .expert import expert_length

    if threads:
        torch.set_num_threads(threads)
    model = bundle.model.eval()
    mask = bundle.action_mask()
    if embodiment and embodiment != bundle.embodiment.name:  # zero-shot on another body: its action mask
        from flare_policy.embodiments import get_embodiment
        target = get_embodiment(embodiment)
        if tuple(target.actions) != tuple(bundle.actions):
            raise ValueError(f"embodiment {embodiment!r} has other actions than the bundle's "
                             f"{bundle.embodiment.name!r}")
        mask = torch.tensor(target.action_mask(), dtype=torch.bool)
    actions = bundle.actions
    bank = GoalBank(text_encoder or TextEncoder(bundle.text_encoder["kind"], bundle.text_encoder.get("path")))
    seeds = split_seeds(split, episodes, offset=seed_offset)
    n_envs = max(1, min(n_envs, episodes))
    embodiment = embodiment or bundle.embodiment.name
    env_kwargs = backend_env_kwargs(env, env_config, bundle)
    if vision is None:
        vision = load_vision(bundle, "cpu", vision_encoder_path)
    envs = [make_backend_env(task, embodiment=embodiment, **env_kwargs) for _ in range(n_envs)]
    cache = model.new_cache(n_envs, kv_window)
    gen = torch.Generator().manual_seed(12345)
    start_idx = bundle.config.n_actions

    results = [None] * episodes
    slot_ep = [-1] * n_envs  # episode index each env slot is running
    obs = [None] * n_envs
    prev = np.full(n_envs, start_idx)
    frames = {}
    next_ep = 0
    bar = tqdm(total=episodes, desc=f"eval {task}", unit="ep", disable=not progress)

    def start(slot):
        nonlocal next_ep
        if next_ep >= episodes:
            slot_ep[slot] = -1
            return
        i = next_ep
        next_ep += 1
        o, info = envs[slot].reset(seed=int(seeds[i]))
        obs[slot], slot_ep[slot], prev[slot] = o, i, start_idx
        results[i] = {"seed": int(seeds[i]), "goal": o["goal"], "length": 0, "info": info}
        cache.reset(torch.tensor([slot]))
        if video_dir is not None and i < n_videos:
            frames[i] = []

    for s in range(n_envs):
        start(s)
    while any(e >= 0 for e in slot_ep):
        live = [s for s in range(n_envs) if slot_ep[s] >= 0]
        # idle slots step with a copy of a live observation; their outputs are ignored
        src = [s if slot_ep[s] >= 0 else live[0] for s in range(n_envs)]
        rgb = np.stack([obs[s]["rgb"] for s in src])[:, None]
        goal_idx = bank.index([obs[s]["goal"] for s in src])[:, None]
        inp = make_input(rgb, goal_idx, prev[src][:, None], [[int(obs[s]["in_hand"])] for s in src],
                         [[int(obs[s]["step"])] for s in src], bank, vision=vision)
        logits, _, _ = model(inp, cache=cache, action_mask=mask)
        probs = torch.softmax(logits[:, 0], -1)
        act = probs.argmax(-1) if greedy else torch.multinomial(probs, 1, generator=gen)[:, 0]
        for s in live:
            a = int(act[s])
            i = slot_ep[s]
            if i in frames:
                frames[i].append(_annotate(obs[s]["rgb"], obs[s]["goal"], actions[a], int(obs[s]["step"])))
            o, _, term, trunc, info = envs[s].step(a)
            prev[s] = a
            results[i]["length"] += 1
            obs[s] = o
            if term or trunc:
                r = results[i]
                r["success"] = bool(info.get("success", False))
                # how it ended: success, an `end` judged a failure, or the step limit
                r["outcome"] = "success" if r["success"] else ("wrong_end" if term else "timeout")
                r["pct_rooms"] = info.get("pct_rooms")
                exp_len = r["info"].get("expert_length")
                r["expert_length"] = int(exp_len if exp_len is not None
                                         else expert_length(task, r["seed"], embodiment=embodiment))
                r["sel"] = sel(r["success"], r["length"], r["expert_length"])  # None: no expert length
                del r["info"]
                if i in frames:
                    frames[i].append(_annotate(o["rgb"], o["goal"], "success" if r["success"] else "failure",
                                               int(o["step"])))
                    write_gif(frames.pop(i), Path(video_dir) / f"{task}_{i:03d}_seed{r['seed']}.gif")
                bar.update(1)
                start(s)
    bar.close()
    for e in envs:  # AI2-THOR envs stop their Unity process
        e.close()
    succ = [r["success"] for r in results]
    summary = {
        "task": task, "split": split, "episodes": episodes, "greedy": greedy, "bundle": str(bundle.path),
        "env": env, "kv_window": kv_window,
        "success": wilson_ci(int(sum(succ)), len(succ)),
        "sel": mean_ci([r["sel"] or 0.0 for r in results]),  # FLaRe logs an undefined SEL as 0
        "episode_length": mean_ci([r["length"] for r in results]),
        "outcomes": {k: sum(r["outcome"] == k for r in results) for k in ("success", "wrong_end", "timeout")},
    }
    if results and results[0].get("pct_rooms") is not None:
        summary["pct_rooms"] = mean_ci([r["pct_rooms"] for r in results])
    summary["per_episode"] = results
    return summary


def format_summary(s: dict) -> str:
    def f(k, pct=True):
        m = s[k]
        mul = 100 if pct else 1
        return f"{m['mean'] * mul:6.1f} [{m['ci95'][0] * mul:.1f}, {m['ci95'][1] * mul:.1f}]"
    line = (f"{s['task']:<22} n={s['episodes']:<4} success {f('success')}  SEL {f('sel')}  "
            f"len {f('episode_length', False)}")
    if "pct_rooms" in s:
        line += f"  %rooms {f('pct_rooms')}"
    return line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="flare-train eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, help="policy bundle directory")
    p.add_argument("--task", nargs="+", required=True, help="task family/families (or 'all' for the 4 demo families)")
    p.add_argument("--episodes", type=int, default=200, help="episodes per task (default 200)")
    p.add_argument("--split", choices=("val", "test", "train"), default="val", help="seed split (default val)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--greedy", dest="greedy", action="store_true", default=True, help="argmax actions (default)")
    g.add_argument("--sample", dest="greedy", action="store_false", help="sample actions")
    p.add_argument("--envs", type=int, default=8, help="environments stepped together (default 8)")
    p.add_argument("--kv-window", type=int, default=1000, help="KV-cache window in steps (default 1000)")
    p.add_argument("--embodiment", help="run on another sim embodiment (e.g. sim_locobot)")
    p.add_argument("--env", choices=("minichores", "ai2thor"), default="minichores",
                   help="simulator (default minichores); ai2thor needs --env-config")
    p.add_argument("--env-config", default="", metavar="YAML", help="AI2-THOR settings (--env ai2thor; see README)")
    p.add_argument("--vision-encoder-path", default="", metavar="DIR",
                   help="bundles with DINOv2 vision: local dinov2-small directory instead of the bundle's path")
    p.add_argument("--video", metavar="DIR", help="write annotated GIFs of the first episodes here")
    p.add_argument("--videos", type=int, default=3, help="how many episodes per task to record (default 3)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object per task (last lines)")
    p.add_argument("--record", action="store_true",
                   help="also store the summaries in the bundle's policy.json (evaluation.<task>.<greedy|sampled>)")
    a = p.parse_args(argv)
    from .envs import DEMO_TASKS

    tasks = list(DEMO_TASKS) if a.task == ["all"] else a.task
    bundle = load_bundle(a.bundle)
    te = TextEncoder(bundle.text_encoder["kind"], bundle.text_encoder.get("path"))
    try:
        vision = load_vision(bundle, "cpu", a.vision_encoder_path)
    except ValueError as e:
        print(f"flare-train eval: error: {e}", file=sys.stderr)
        return 2
    out = []
    for task in tasks:
        t0 = time.time()
        s = evaluate(bundle, task, a.episodes, split=a.split, greedy=a.greedy, n_envs=a.envs,
                     kv_window=a.kv_window, video_dir=a.video, n_videos=a.videos, text_encoder=te,
                     embodiment=a.embodiment, progress=not a.json, threads=a.threads, env=a.env,
                     env_config=a.env_config, vision=vision)
        s["wall_s"] = round(time.time() - t0, 1)
        out.append(s)
        if not a.json:
            print(format_summary(s))
    if a.json:
        for s in out:
            print(json.dumps({k: v for k, v in s.items() if k != "per_episode"}))
    if a.record:
        record_in_bundle(a.bundle, out)
    return 0


def record_in_bundle(bundle_dir, summaries: list[dict]) -> Path:
    """Store evaluation summaries (no per-episode rows) in the bundle's policy.json, so the bundle carries the
    figures it was judged by: evaluation[task][greedy|sampled][split] = {success, sel, episode_length, ...}.
    The file is replaced atomically; model weights are untouched."""
    import os

    path = Path(bundle_dir) / "policy.json"
    meta = json.loads(path.read_text())
    ev = meta.setdefault("evaluation", {})
    for s in summaries:
        mode = "greedy" if s["greedy"] else "sampled"
        row = {k: v for k, v in s.items() if k not in ("per_episode", "bundle", "task", "greedy")}
        ev.setdefault(s["task"], {}).setdefault(mode, {})[s["split"]] = row
    tmp = path.with_name(".policy.json.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, path)
    return path
