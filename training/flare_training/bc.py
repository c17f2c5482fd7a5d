"""Behaviour cloning (SPOC-style imitation pretraining): one multi-task policy from expert demonstrations.

The causal decoder is trained on windows of consecutive steps (SPOC: sliding window of 100) with a
cross-entropy loss on the expert's actions. Progress bar, TensorBoard, resumable checkpoints; the result is
a policy bundle.

    flare-train bc --config training/configs/bc_tiny.yaml
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from flare_policy.bundle import save_bundle, sim_camera
from flare_policy.embodiments import get_embodiment
from flare_policy.model import PRESETS, PolicyNet
from flare_policy.text import TextEncoder

from .agent import GoalBank, make_input
from .allocator import keep_freed_memory
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .configfile import dataclass_from_yaml
from .envs.render import object_in_front


@dataclass
class BCConfig:
    data: list[str] = field(default_factory=lambda: ["data/demos"])  # demo dataset directories
    # fraction of the windows drawn from each `data` directory (empty: every shard equally likely)
    data_mix: list[float] = field(default_factory=list)
    # start from this bundle's weights and model config (`preset` and `model` are then ignored), e.g. to
    # continue a BC policy on aggregated `flare-train dagger` data; empty: a fresh model
    init: str = ""
    out: str = "runs/bc/bundle"  # policy bundle written at the end (and at each checkpoint)
    logdir: str = "runs/bc"  # TensorBoard logs + checkpoint.pt
    preset: str = "tiny"
    model: dict = field(default_factory=dict)  # overrides of the preset
    embodiment: str = "sim"
    window: int = 64  # steps per training window
    batch_size: int = 16  # windows per batch
    steps: int = 3000  # optimizer steps
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup: int = 100
    grad_clip: float = 1.0
    checkpoint_every: int = 250
    cache_shards: int = 0  # demo shards kept in memory, 0 = all (compact tile storage: ~100 bytes per frame)
    seed: int = 0
    threads: int = 2
    # bf16 autocast of the forward pass: "auto" = on where the CPU computes bf16 natively (AVX-512 BF16 / AMX),
    # "on", "off" (fp32). Weights, optimizer state and the loss stay fp32.
    amp: str = "auto"
    # Loss weight of the steps with a ball, box or key in the cell in front: where the policy commits (`end`,
    # `pickup`) or must not. The expert walks straight to its goal, so these steps are ~1 in 30 of a demonstration
    # and BC barely learns to compare the object with the goal (decision probe, README). 1 = plain BC.
    decision_weight: float = 1.0

    @classmethod
    def from_yaml(cls, path) -> "BCConfig":
        return dataclass_from_yaml(cls, path, "BC options")


def shard_probabilities(dataset, mix: list[float]) -> np.ndarray:
    """Per-shard sampling probabilities giving data directory k the fraction mix[k] of the windows."""
    if len(mix) != len(dataset.sources) or any(w < 0 for w in mix) or sum(mix) <= 0:
        raise ValueError(f"data_mix needs one non-negative weight per data directory ({len(dataset.sources)}), "
                         f"got {mix}")
    src = np.asarray(dataset.shard_source)
    counts = np.bincount(src, minlength=len(mix))
    if any(c == 0 and w > 0 for c, w in zip(counts, mix)):
        raise ValueError(f"data_mix gives weight to a data directory without shards: {dataset.sources}")
    p = np.asarray(mix, np.float64)[src] / np.maximum(counts[src], 1)
    return p / p.sum()


def sample_batch(dataset, batch: int, window: int, n_actions: int, rng: np.random.Generator,
                 shard_p: np.ndarray | None = None) -> dict:
    """Windows of `window` consecutive steps of a shard's concatenated episodes: a window may span several
    episodes (the decoder's episode-aware mask keeps them apart, so no step is wasted on padding). The
    previous-action input is n_actions at an episode's first step. Only a shard shorter than the window is
    padded (`valid` False, excluded from the loss). Shards are drawn uniformly, or with probabilities
    `shard_p` (see `shard_probabilities`)."""
    out = {k: np.zeros((batch, window) + ((56, 56, 3) if k == "rgb" else ()), np.uint8 if k == "rgb" else np.int64)
           for k in ("rgb", "action", "prev", "in_hand", "step", "goal_row")}
    out["valid"] = np.zeros((batch, window), bool)
    goals = []
    for b in range(batch):
        sid = int(rng.integers(len(dataset.shards)) if shard_p is None else rng.choice(len(shard_p), p=shard_p))
        z, offs = dataset.shard_arrays(sid), dataset.shard_offsets(sid)
        n = len(z["action"])
        a = int(rng.integers(0, max(1, n - window + 1)))
        m = min(window, n - a)
        out["rgb"][b, :m] = dataset.shard_frames(sid, a, a + m)
        out["rgb"][b, m:] = out["rgb"][b, m - 1]
        for k in ("action", "in_hand", "step"):
            out[k][b, :m] = z[k][a:a + m]
            out[k][b, m:] = z[k][a + m - 1]
        out["step"][b, m:] += np.arange(1, window - m + 1)  # padding never looks like an episode start
        out["valid"][b, :m] = True
        # the previous-action input is what was executed: the label itself in expert demos, the learner's own
        # action in `flare-train dagger` data
        done = z.get("executed", z["action"])
        out["prev"][b, 1:m] = done[a:a + m - 1]
        out["prev"][b, m:] = done[a + m - 1]
        out["prev"][b, 0] = done[a - 1] if a > 0 else n_actions
        out["prev"][b][out["step"][b] == 0] = n_actions
        episode = np.searchsorted(offs, np.arange(a, a + m), side="right") - 1  # local episode ids
        episode = np.r_[episode, np.full(window - m, episode[-1])]
        first = int(dataset.shard_episodes(sid)[0])
        for e in np.unique(episode):
            out["goal_row"][b][episode == e] = len(goals)
            goals.append(dataset.goals[first + int(e)])
    out["goals"] = goals
    return out


def bc_loss(model, batch, bank: GoalBank, bf16: bool = False, decision_weight: float = 1.0):
    goal_idx = bank.index(batch["goals"])[batch["goal_row"]]
    inp = make_input(batch["rgb"], goal_idx, batch["prev"], batch["in_hand"], batch["step"], bank)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits, _, _ = model(inp)
    logits = logits.float()
    target = torch.as_tensor(batch["action"], dtype=torch.long)
    valid = torch.as_tensor(batch["valid"])
    if decision_weight == 1.0:
        loss = F.cross_entropy(logits[valid], target[valid])
    else:  # weighted mean over the valid steps (BCConfig.decision_weight)
        w = 1.0 + (decision_weight - 1.0) * torch.as_tensor(object_in_front(batch["rgb"]), dtype=torch.float32)
        ce = F.cross_entropy(logits[valid], target[valid], reduction="none")
        loss = (ce * w[valid]).sum() / w[valid].sum()
    acc = (logits[valid].argmax(-1) == target[valid]).float().mean()
    return loss, acc


def train(cfg: BCConfig, resume: bool = True) -> Path:
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from .dataset import DemoDataset

    from flare_policy.cpuinfo import use_bf16

    if not cfg.decision_weight > 0:
        raise ValueError(f"decision_weight must be > 0, got {cfg.decision_weight}")
    torch.set_num_threads(cfg.threads)
    keep_freed_memory()
    bf16 = use_bf16(cfg.amp)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    emb = get_embodiment(cfg.embodiment)
    if cfg.init:
        from flare_policy.bundle import load_bundle

        init = load_bundle(cfg.init)
        if init.embodiment.name != cfg.embodiment:
            sys.exit(f"flare-train bc: init bundle {cfg.init} is for {init.embodiment.name!r}, not {cfg.embodiment!r}")
        model = init.model.float()
        model_cfg = model.cfg
    else:
        model_cfg = PRESETS[cfg.preset](**{"n_actions": len(emb.actions), **cfg.model})
        model = PolicyNet(model_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * 0.5 *
                                              (1 + math.cos(math.pi * min(1.0, s / cfg.steps))))
    logdir = Path(cfg.logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    ckpt_path = logdir / "checkpoint.pt"
    start = 0
    if resume and ckpt_path.exists():
        try:
            state = load_checkpoint(ckpt_path)
        except CheckpointError as e:
            sys.exit(f"flare-train bc: {e}; remove it or pass --fresh")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
        print(f"resumed from {ckpt_path} at step {start}")
    (logdir / "bc_config.json").write_text(json.dumps(asdict(cfg), indent=2))

    dataset = DemoDataset(cfg.data, cache_shards=cfg.cache_shards)
    dataset.preload(progress=True)
    shard_p = shard_probabilities(dataset, cfg.data_mix) if cfg.data_mix else None
    print(f"demo frames in memory: {dataset.memory_bytes() / 2**20:.0f} MiB for {dataset.num_steps:,} steps")
    bank = GoalBank(TextEncoder("minilm"))
    t_text = time.time()
    bank.text_encoder.prefetch(dataset.goals)
    bank.index(sorted(set(dataset.goals)))
    print(f"encoded {len(bank)} distinct goals in {time.time() - t_text:.1f} s")
    writer = SummaryWriter(str(logdir / "tb"))
    print(f"BC: {len(dataset)} episodes, model {cfg.preset} ({model.n_trainable():,} params), "
          f"{cfg.steps} steps of {cfg.batch_size}x{cfg.window}, {'bf16 autocast' if bf16 else 'fp32'}")

    def checkpoint(step):
        save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "step": step, "torch_rng": torch.get_rng_state(),
                         "numpy_rng": json.dumps(rng.bit_generator.state)}, ckpt_path)
        save_bundle(cfg.out, model, embodiment=cfg.embodiment, cameras=[sim_camera()],
                    text_encoder={"kind": "minilm"},
                    provenance={"trainer": "flare-train bc", "config": asdict(cfg), "step": step,
                                "episodes": len(dataset)})

    model.train()
    t0, bar = time.time(), tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="bc", unit="step")
    for step in bar:
        batch = sample_batch(dataset, cfg.batch_size, cfg.window, model_cfg.n_actions, rng, shard_p)
        loss, acc = bc_loss(model, batch, bank, bf16, cfg.decision_weight)
        if not torch.isfinite(loss):
            sys.exit(f"flare-train bc: non-finite loss at step {step}; last good checkpoint kept at {ckpt_path}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        if step % 10 == 0:
            sps = (step + 1 - start) * cfg.batch_size * cfg.window / (time.time() - t0)
            for k, v in (("loss", loss.item()), ("accuracy", acc.item()), ("grad_norm", gnorm.item()),
                         ("lr", sched.get_last_lr()[0]), ("samples_per_s", sps)):
                writer.add_scalar(f"bc/{k}", v, step)
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc.item():.3f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            checkpoint(step + 1)
    writer.close()
    if start >= cfg.steps and not Path(cfg.out).exists():
        checkpoint(cfg.steps)
    print(f"bundle written to {cfg.out}")
    return Path(cfg.out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="flare-train bc", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file of BCConfig options (see training/configs/bc_tiny.yaml)")
    p.add_argument("--data", nargs="+", help="demo dataset directories (overrides the config)")
    p.add_argument("--out", help="output bundle directory")
    p.add_argument("--logdir", help="TensorBoard + checkpoint directory")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --logdir")
    a = p.parse_args(argv)
    cfg = BCConfig.from_yaml(a.config) if a.config else BCConfig()
    for k in ("data", "out", "logdir", "steps"):
        if getattr(a, k) is not None:
            setattr(cfg, k, getattr(a, k))
    try:
        train(cfg, resume=not a.fresh)
    except ValueError as e:  # a bad option value (decision_weight, data_mix): say which, no traceback
        print(f"flare-train bc: error: {e}", file=sys.stderr)
        return 2
    return 0
