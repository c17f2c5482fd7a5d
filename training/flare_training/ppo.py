"""FLaRe PPO fine-tuning of a policy bundle on a mini-CHORES task (CleanRL-style, one file, top to bottom).

    flare-train ppo --init models/sim_tiny_bc --task objectnav --config training/configs/ppo_objectnav.yaml
    flare-train ppo --init STRETCH_BUNDLE --task objectnav --env ai2thor --env-config thor.yaml   # AI2-THOR
    flare-train ppo ... --resume                       # continue from the newest checkpoint in <logdir>
    torchrun --nproc_per_node 2 -m flare_training.ppo --init ... --task ...   # data-parallel scale-out

Defaults are FLaRe's released ObjectNav recipe (flare_method.md section 5): Adam lr 2e-5 (constant), clip 0.1,
4 epochs x 1 minibatch over the whole rollout, 128-step rollouts, gamma 0.99, GAE lambda 0.95, value loss
0.5 * MSE weighted by 0.5 (= 0.25 * MSE, as allenact), entropy 0, no advantage normalisation, grad-norm clip
0.5 over all parameters, sparse reward (+10 on a successful `end`), a critic warm-up (value-only updates for the
first `critic_warmup_steps` env steps; FLaRe: 200k = 49 updates of 32 envs x 128 out of 17-47M steps; here
10k = 5 updates of 16 x 128, scaled down with mini-CHORES' ~100x smaller step budgets) and a separate critic:
a full second copy of the policy initialised from the same bundle with a fresh value head, whose value head
alone is used, so value gradients never reach the actor copy (and policy gradients never reach the critic).
Every knob has its contrasting setting (`--entropy-coef`, `--no-separate-critic`, `--critic-warmup-steps 0`,
`--lr`, `--dense-reward`, `--init-weights random`, `--norm-adv`). Ours, for throughput only: `update_chunk`
(gradient accumulation over chunks of envs; the same gradient as one pass).

Context semantics (flare_method.md section 4). Rollouts step every env through the decoder's KV-cache (one
cache per copy, window >= rollout length). All caches restart at each rollout, and an env's cache rows are reset
when its next episode starts. The update re-runs the whole (n_envs, rollout) block as one sequence per env with
`episode_window_mask(step)` (a new episode wherever step == 0, plus the sequence start), which allows exactly
the keys the cache allowed: the effective context is the env's own episode, cut at the rollout start. The
bootstrap value after the last step steps the critic's cache once more (same context as the rollout, like
FLaRe's step-128 value). Both passes run in eval mode (dropout off); FLaRe collects with dropout on
(quirk 12.1), we deliberately do not, so the first ratio of every update is exactly 1 (logged as
`consistency/max_abs_dlogp`, checked by tests/test_ppo_consistency.py).

GAE treats truncation (max_steps) like termination (no bootstrap across it), as allenact/FLaRe do.

Checkpoints (`<logdir>/checkpoints/ckpt_<update>.pt`, atomic + sha256, every `checkpoint_every` updates and at
the end, the newest `keep_checkpoints` kept; --resume takes the newest that verifies) hold model, optimizer,
torch/numpy RNG, global step and per-rank env state (seed stream position + the actions of the current episode,
replayed on resume; mini-CHORES is deterministic), so a resumed run is bit-identical to an uninterrupted one.
A non-finite loss or gradient norm stops the run before the optimizer step (exit code 3) and leaves the last
good checkpoint alone. The final policy is exported as a bundle (actor copy -> model.safetensors, critic
copy -> critic.safetensors, provenance with the config, steps and evaluations).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import functools
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as tdist

from flare_policy.bundle import load_bundle, save_bundle
from flare_policy.embodiments import get_embodiment
from flare_policy.model import ActorCritic, PolicyInput
from flare_policy.model.policy import CriticHead

from .agent import GoalBank, camera_frames, encode_frames, load_vision, make_input
from .allocator import keep_freed_memory
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .configfile import dataclass_from_yaml
from .envs.backends import backend_env_kwargs
from .vecenv import RANK_STRIDE, SeedStream, make_vec_env

EXIT_NONFINITE = 3
CHECKPOINT_FORMAT = "flare-ppo-checkpoint-v1"


# ----------------------------------------------------------------------------------------------- config
@dataclass
class PPOConfig:
    # what to fine-tune, on what
    init: str = ""  # policy bundle: model config, embodiment, text encoder, and (init_weights=bundle) weights
    task: str = "objectnav"  # task family (mini-CHORES, or AI2-THOR CHORES: objectnav pickup fetch roomvisit)
    env: str = "minichores"  # simulator: minichores | ai2thor (needs env_config)
    env_config: str = ""  # ai2thor: YAML of AI2-THOR settings (task specs, houses, build; README "AI2-THOR")
    embodiment: str = ""  # "" = the bundle's embodiment (its action mask is applied)
    vision_encoder_path: str = ""  # dinov2 bundles: local DINOv2 directory instead of the bundle's vision_encoder.path
    init_weights: str = "bundle"  # "bundle" | "random" (a fresh PolicyNet with the bundle's config)
    separate_critic: bool = True  # FLaRe: value from a second full copy; False = the actor copy's value head
    critic_init: str = "fresh_head"  # fresh_head: bundle policy + new value head; bundle: its critic.safetensors
    dense_reward: bool = False  # FLaRe: sparse (+10 on a successful `end`)
    # PPO (FLaRe defaults)
    total_steps: int = 200_000  # env steps over all envs and ranks
    n_envs: int = 16  # per rank
    rollout: int = 128
    lr: float = 2e-5
    clip: float = 0.1
    epochs: int = 4
    minibatches: int = 1  # split by env (whole sequences)
    update_chunk: int = 4  # envs per forward/backward in the update (gradient accumulation); 0 = all at once
    gamma: float = 0.99
    gae_lambda: float = 0.95
    value_coef: float = 0.5  # times 0.5 * MSE
    entropy_coef: float = 0.0
    norm_adv: bool = False
    max_grad_norm: float = 0.5
    critic_warmup_steps: int = 10_000  # value-only updates while fewer env steps than this have been taken
    kv_window: int = 0  # decoder context in steps; 0 = rollout + 1 (the whole rollout plus the bootstrap step)
    # runtime
    vec: str = "auto"  # auto (= sync, measured: see vecenv.py) | sync | async
    vec_workers: int = 0  # async only; 0 = number of CPUs
    threads: int = 0  # torch threads per rank; 0 = auto: idle CPUs (by load average) / local ranks
    device: str = "auto"  # auto | cpu | cuda
    # bf16 autocast of every model forward (rollout and update); weights, optimizer and losses stay fp32.
    # "off" (default: the first ratio of an update is then exactly 1), "on", "auto" (on where the CPU has native
    # bf16, or on CUDA). Measured in README (Training throughput): speed and the ratio-1 deviation.
    amp: str = "off"  # bf16 autocast of model forwards: off | on | auto (CPUs with native bf16, CUDA)
    seed: int = 0  # torch/numpy seeds and the base of the env seed streams (train split)
    # outputs
    logdir: str = "runs/ppo"  # checkpoints/, metrics.jsonl, tb/, ppo_config.json
    out: str = ""  # final bundle directory; "" = <logdir>/bundle
    checkpoint_every: int = 10  # updates; 0 = no checkpoints and no bundle (benchmarks)
    keep_checkpoints: int = 2  # <logdir>/checkpoints/ckpt_<update>.pt files kept (newest)
    eval_every: int = 0  # updates between validation evaluations (0 = off)
    eval_at_start: bool = True  # also evaluate before the first update (when eval_every > 0)
    eval_episodes: int = 50
    eval_greedy: bool = False  # FLaRe's RL eval samples actions (section 10); True = argmax
    eval_envs: int = 8
    progress: bool = True  # tqdm bar with ETA over total_steps
    # debugging hooks (hidden from --help)
    debug_inject_nan_at_update: int = -1  # multiply the loss of that update (1-based) by NaN (tests the stop)
    debug_checksum_dir: str = ""  # each rank appends "update params_sha rollout_sha" per update (DDP test)

    HIDDEN = ("debug_inject_nan_at_update", "debug_checksum_dir")
    # must match when resuming (other options, e.g. total_steps or eval settings, may change)
    RESUME_KEYS = ("task", "embodiment", "init_weights", "separate_critic", "n_envs", "rollout", "seed",
                   "kv_window", "minibatches", "dense_reward")

    @classmethod
    def from_yaml(cls, path) -> "PPOConfig":
        return dataclass_from_yaml(cls, path, "PPO options")

    def validate(self) -> "PPOConfig":
        if not self.init:
            raise ValueError("--init BUNDLE is required")
        if self.init_weights not in ("bundle", "random"):
            raise ValueError(f"init_weights must be 'bundle' or 'random', got {self.init_weights!r}")
        if self.critic_init not in ("fresh_head", "bundle"):
            raise ValueError(f"critic_init must be 'fresh_head' or 'bundle', got {self.critic_init!r}")
        if self.n_envs < 1 or self.rollout < 1 or self.epochs < 1 or self.total_steps < 1:
            raise ValueError("n_envs, rollout, epochs and total_steps must be >= 1")
        if self.amp not in ("off", "on", "auto"):
            raise ValueError(f"amp must be 'off', 'on' or 'auto', got {self.amp!r}")
        if not 1 <= self.minibatches <= self.n_envs:
            raise ValueError(f"minibatches must be in [1, n_envs={self.n_envs}] (minibatches split by env)")
        return self

    @property
    def window(self) -> int:
        return self.kv_window or self.rollout + 1


# ----------------------------------------------------------------------------------------------- distributed
@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup_world(cfg: PPOConfig) -> World:
    """Single process, or the torchrun environment (RANK/WORLD_SIZE): gloo on CPU, nccl on GPU."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    device = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if size > 1 and not tdist.is_initialized():
        tdist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=60))
    return World(rank, size, local, local_size, device)


def auto_threads(local_ranks: int = 1) -> int:
    """Torch threads per rank: the CPUs not already busy (1-min load average), shared by the local ranks.
    On a contended machine more threads than free cores make every op wait for the slowest thread
    (platform_notes.md section 2: 30-50x slower), so this errs towards 1."""
    cpus = os.cpu_count() or 1
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except OSError:
        busy = 0
    return max(1, min(cpus, cpus - busy) // max(1, local_ranks))


def broadcast_params(module: torch.nn.Module, world: World) -> None:
    if world.distributed:
        for t in module.state_dict().values():
            tdist.broadcast(t, 0)


def allreduce_grads(params: list[torch.nn.Parameter], world: World) -> None:
    """Average gradients over ranks (one flat buffer; params without a gradient are skipped on every rank
    alike, because which params get gradients depends only on the config)."""
    if not world.distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    tdist.all_reduce(flat)
    flat /= world.size
    i = 0
    for g in grads:
        g.copy_(flat[i:i + g.numel()].view_as(g))
        i += g.numel()


def allreduce_sum(values: list[float], world: World) -> list[float]:
    if not world.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=world.device if world.device.type == "cuda" else "cpu")
    tdist.all_reduce(t)
    return t.tolist()


# ----------------------------------------------------------------------------------------------- model
def build_actor_critic(cfg: PPOConfig, bundle) -> ActorCritic:
    """Actor copy = the bundle policy (or a random PolicyNet); critic copy = the same weights with a fresh value
    head (FLaRe), or the bundle's critic.safetensors. Shared mode: values from the actor copy's value head."""
    torch.manual_seed(cfg.seed)  # random init / fresh heads are identical on every rank (and broadcast anyway)
    ac = ActorCritic(bundle.config, separate_critic=cfg.separate_critic)
    if cfg.init_weights == "bundle":
        ac.actor.load_state_dict(bundle.model.state_dict())
        if ac.separate:
            if cfg.critic_init == "bundle" and bundle.critic is not None:
                ac.critic.load_state_dict(bundle.critic.state_dict())
            else:
                ac.critic.load_state_dict(bundle.model.state_dict())
                ac.critic.critic = CriticHead(bundle.config.d_model)
        else:
            ac.actor.critic = CriticHead(bundle.config.d_model)  # BC never trains the value head
    return ac


def value_net(ac: ActorCritic):
    return ac.critic if ac.separate else ac.actor


def rows(inp: PolicyInput, idx) -> PolicyInput:
    """The sub-block of env rows `idx` (the goal bank is shared)."""
    idx = torch.as_tensor(idx, device=inp.step.device)
    return replace(inp, images={k: v[idx] for k, v in inp.images.items()}, goal_index=inp.goal_index[idx],
                   prev_action=inp.prev_action[idx], in_hand=inp.in_hand[idx], step=inp.step[idx])


# ----------------------------------------------------------------------------------------------- rollouts
@dataclass
class Rollout:
    """One (n_envs, T) block. Row t holds the observation the action at t was taken from."""
    rgb: np.ndarray  # (N, T, H, W, 3) uint8
    goal: np.ndarray  # (N, T) GoalBank rows
    prev: np.ndarray  # (N, T) previous action (n_actions at an episode's first step)
    in_hand: np.ndarray
    step: np.ndarray  # (N, T) episode step, 0 = episode start
    action: np.ndarray
    logprob: np.ndarray  # (N, T) float32
    value: np.ndarray  # (N, T) float32
    reward: np.ndarray  # (N, T) float32
    done: np.ndarray  # (N, T) bool: the episode ended with this step (terminated or truncated)
    last_value: np.ndarray  # (N,) bootstrap value of the observation after the last step
    # dinov2 bundles: {camera: (N, T, C, h, w)} frozen-encoder features of `rgb`, computed once while collecting
    features: dict[str, torch.Tensor] | None = None

    @classmethod
    def empty(cls, n: int, t: int, frame_shape) -> "Rollout":
        i = lambda: np.zeros((n, t), np.int64)  # noqa: E731
        f = lambda: np.zeros((n, t), np.float32)  # noqa: E731
        return cls(np.zeros((n, t, *frame_shape), np.uint8), i(), i(), i(), i(), i(), f(), f(), f(),
                   np.zeros((n, t), bool), np.zeros(n, np.float32))

    def store_features(self, t: int, feats: dict[str, torch.Tensor]) -> None:
        """Keep step t's features ({camera: (N, 1, C, h, w)}), allocating the block on the first step."""
        if self.features is None:
            N, T = self.goal.shape
            self.features = {k: v.new_empty((N, T, *v.shape[2:])) for k, v in feats.items()}
        for k, v in feats.items():
            self.features[k][:, t] = v[:, 0]

    def policy_input(self, bank: GoalBank, device) -> PolicyInput:
        return make_input(self.rgb, self.goal, self.prev, self.in_hand, self.step, bank, device,
                          features=self.features)

    def digest(self) -> str:
        h = hashlib.sha256()
        for a in (self.rgb, self.goal, self.action, self.reward):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


@dataclass
class EnvState:
    """What carries over between rollouts: the current observations and previous actions."""
    obs: dict
    prev: np.ndarray


class Timer:
    def __init__(self):
        self.t = {"env": 0.0, "inference": 0.0, "update": 0.0}

    def add(self, key: str, since: float) -> float:
        now = time.perf_counter()
        self.t[key] = self.t.get(key, 0.0) + now - since
        return now


@functools.lru_cache(maxsize=None)
def _amp_enabled(mode: str, device_type: str) -> bool:
    from flare_policy.cpuinfo import use_bf16

    return (mode == "auto" and device_type == "cuda") or use_bf16(mode)


def _autocast(cfg: PPOConfig, device):
    """bf16 autocast context per cfg.amp (resolved once per mode and device type: it wraps every rollout step)."""
    device_type = getattr(device, "type", None) or torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=_amp_enabled(cfg.amp, device_type))


@torch.no_grad()
def collect_rollout(ac: ActorCritic, envs, state: EnvState, bank: GoalBank, cfg: PPOConfig, mask, device,
                    timer: Timer | None = None, vision=None) -> tuple[Rollout, list[dict]]:
    """Step all envs `cfg.rollout` times through fresh KV-caches; returns the rollout and finished episodes.
    `vision` (dinov2 bundles): the frozen DINOv2; each frame's features are computed once and kept for the update."""
    timer = timer or Timer()
    N, T = len(state.prev), cfg.rollout
    start_idx = ac.actor.cfg.n_actions
    ro = Rollout.empty(N, T, state.obs["rgb"].shape[1:])
    caches = ac.new_caches(N, cfg.window, device)  # context restarts at every rollout (FLaRe)
    episodes = []
    obs = state.obs
    t0 = time.perf_counter()
    for t in range(T):
        goal = bank.index(obs["goal"])
        ro.rgb[:, t], ro.goal[:, t], ro.prev[:, t] = obs["rgb"], goal, state.prev
        ro.in_hand[:, t], ro.step[:, t] = obs["in_hand"], obs["step"]
        feats = _features(obs, vision, device)
        if feats is not None:
            ro.store_features(t, feats)
        inp = make_input(obs["rgb"][:, None], goal[:, None], state.prev[:, None], obs["in_hand"][:, None],
                         obs["step"][:, None], bank, device, features=feats)
        with _autocast(cfg, device):
            dist, value = ac(inp, caches=caches, action_mask=mask)
        action = dist.sample()
        ro.logprob[:, t] = dist.log_prob(action)[:, 0].cpu().numpy()
        ro.value[:, t] = value[:, 0].cpu().numpy()
        act = action[:, 0].cpu().numpy()
        ro.action[:, t] = act
        t0 = timer.add("inference", t0)
        obs, rew, term, trunc, infos = envs.step(act)
        t0 = timer.add("env", t0)
        done = term | trunc
        ro.reward[:, t], ro.done[:, t] = rew, done
        state.prev = np.where(done, start_idx, act)
        if done.any():
            ac.reset_envs(caches, torch.as_tensor(done, device=device))  # next step starts a new episode
            episodes += [info["episode"] for info in infos if "episode" in info]
    # bootstrap: one more step of the value copy's cache on the next observation (same context)
    goal = bank.index(obs["goal"])
    inp = make_input(obs["rgb"][:, None], goal[:, None], state.prev[:, None], obs["in_hand"][:, None],
                     obs["step"][:, None], bank, device, features=_features(obs, vision, device))
    with _autocast(cfg, device):
        _, last, _ = value_net(ac)(inp, cache=caches[1] if ac.separate else caches[0])
    ro.last_value[:] = last[:, 0].float().cpu().numpy()
    state.obs = obs
    timer.add("inference", t0)
    return ro, episodes


def _features(obs: dict, vision, device) -> dict[str, torch.Tensor] | None:
    """{camera: (N, 1, C, h, w)} features of the current frames for a dinov2 bundle; None for cnn bundles."""
    if vision is None:
        return None
    return encode_frames(camera_frames(obs["rgb"][:, None]), vision, device)


def compute_gae(ro: Rollout, gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns (N, T); done (termination or truncation) stops bootstrapping."""
    N, T = ro.reward.shape
    adv = np.zeros((N, T), np.float32)
    last = np.zeros(N, np.float32)
    for t in reversed(range(T)):
        next_value = ro.last_value if t == T - 1 else ro.value[:, t + 1]
        nonterminal = 1.0 - ro.done[:, t].astype(np.float32)
        delta = ro.reward[:, t] + gamma * next_value * nonterminal - ro.value[:, t]
        last = delta + gamma * lam * nonterminal * last
        adv[:, t] = last
    return adv, adv + ro.value


# ----------------------------------------------------------------------------------------------- update
class NonFiniteLoss(RuntimeError):
    pass


def ppo_losses(ac: ActorCritic, inp: PolicyInput, b: dict, cfg: PPOConfig, mask, warmup: bool) -> dict:
    """b: action, logprob, value (old), adv (already normalised if norm_adv), ret as (n, T) tensors.
    Warm-up: value loss only (FLaRe's PPOValue stage; the actor copy is not even run).
    Returns the loss terms (means over the block) as tensors."""
    if warmup:
        with _autocast(cfg, inp.step.device):
            _, value, _ = value_net(ac)(inp, window=cfg.window)
        value = value.float()
        out = {}
    else:
        with _autocast(cfg, inp.step.device):
            dist, value = ac(inp, window=cfg.window, action_mask=mask)  # fp32 outputs (ActorCritic)
        logp = dist.log_prob(b["action"])
        log_ratio = logp - b["logprob"]
        ratio = log_ratio.exp()
        adv = b["adv"]
        pg = -torch.min(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv).mean()
        entropy = dist.entropy().mean()
        with torch.no_grad():
            out = {"approx_kl": ((ratio - 1) - log_ratio).mean(),
                   "clip_frac": ((ratio - 1).abs() > cfg.clip).float().mean(),
                   "max_abs_dlogp": log_ratio.abs().max()}
        out.update(policy_loss=pg, entropy=entropy)
    v_loss = 0.5 * (b["ret"] - value).pow(2).mean()
    out["value_loss"] = v_loss
    out["max_abs_dvalue"] = (value - b["value"]).abs().max().detach()
    out["loss"] = cfg.value_coef * v_loss if warmup else (
        out["policy_loss"] + cfg.value_coef * v_loss - cfg.entropy_coef * out["entropy"])
    return out


def ppo_update(ac: ActorCritic, opt: torch.optim.Optimizer, inp: PolicyInput, b: dict, cfg: PPOConfig, mask,
               warmup: bool, world: World, rng: np.random.Generator, update: int = 0) -> dict:
    """`epochs` passes of `minibatches` env-groups, one optimizer step each; gradients averaged over ranks,
    clipped, Adam step. Each minibatch is forwarded/backwarded in chunks of `update_chunk` envs whose
    gradients are accumulated (weights = chunk share, so the gradient is the whole minibatch's; smaller
    activations keep the CPU in cache: ~1.7x faster for the tiny model). Raises NonFiniteLoss before the
    optimizer step of the offending minibatch."""
    params = [p for p in ac.parameters() if p.requires_grad]
    N = inp.shape[0]
    sums: dict[str, float] = {}
    n = 0
    first: dict[str, float] = {}
    for epoch in range(cfg.epochs):
        order = rng.permutation(N) if cfg.minibatches > 1 else np.arange(N)
        for mb, idx in enumerate(np.array_split(order, cfg.minibatches)):
            mb_b = b if cfg.minibatches == 1 else {k: v[torch.as_tensor(idx, device=v.device)] for k, v in b.items()}
            if cfg.norm_adv and not warmup:
                mb_b = {**mb_b, "adv": (mb_b["adv"] - mb_b["adv"].mean()) / (mb_b["adv"].std() + 1e-5)}
            chunk = cfg.update_chunk or len(idx)
            opt.zero_grad(set_to_none=True)
            acc: dict[str, float] = {}
            for c0 in range(0, len(idx), chunk):
                sel = np.arange(c0, min(c0 + chunk, len(idx)))
                whole = len(sel) == N
                sub = inp if whole else rows(inp, idx[sel])
                sb = mb_b if whole else {k: v[torch.as_tensor(sel, device=v.device)] for k, v in mb_b.items()}
                w = len(sel) / len(idx)
                out = ppo_losses(ac, sub, sb, cfg, mask, warmup)
                if update + 1 == cfg.debug_inject_nan_at_update:
                    out["loss"] = out["loss"] * float("nan")
                (out["loss"] * w).backward()
                for k, v in out.items():
                    v = float(v.detach())
                    if k.startswith("max_abs"):
                        acc[k] = max(acc.get(k, 0.0), v)
                    else:
                        acc[k] = acc.get(k, 0.0) + w * v
            if epoch == 0 and mb == 0:  # parameters still equal the rollout's: the ratio must be exactly 1
                first = {k: v for k, v in acc.items() if k.startswith("max_abs")}
            if allreduce_sum([0.0 if np.isfinite(acc["loss"]) else 1.0], world)[0]:
                terms = ", ".join(f"{k}={v:.4g}" for k, v in acc.items())
                raise NonFiniteLoss(f"non-finite loss in update {update + 1} (epoch {epoch + 1}, minibatch {mb + 1}):"
                                    f" {terms}")
            allreduce_grads(params, world)
            gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            if not torch.isfinite(gnorm):
                raise NonFiniteLoss(f"non-finite gradient norm in update {update + 1} (epoch {epoch + 1}, "
                                    f"minibatch {mb + 1})")
            opt.step()
            for k, v in acc.items():
                if not k.startswith("max_abs"):
                    sums[k] = sums.get(k, 0.0) + v
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(gnorm)
            n += 1
    metrics = {k: v / n for k, v in sums.items()}
    metrics.update({f"consistency/{k}": v for k, v in first.items()})
    return metrics


def explained_variance(pred: np.ndarray, target: np.ndarray) -> float:
    var = float(np.var(target))
    return float("nan") if var == 0 else 1.0 - float(np.var(target - pred)) / var


def params_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- training
def checkpoint_files(logdir) -> list[Path]:
    """Complete or not, oldest first: <logdir>/checkpoints/ckpt_<update>.pt."""
    return sorted((Path(logdir) / "checkpoints").glob("ckpt_*.pt"))


def latest_checkpoint(logdir, verbose: bool = True) -> tuple[Path, dict] | None:
    """The newest checkpoint that verifies (checksum + safe load); older ones are the fallback when the newest
    was cut off by a crash (e.g. killed between writing the file and its checksum)."""
    for path in reversed(checkpoint_files(logdir)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as e:
            if verbose:
                print(f"skipping checkpoint {path.name}: {e}", file=sys.stderr)
    return None


def _write_checkpoint(state: dict, logdir: Path, keep: int) -> Path:
    """One file per checkpoint (atomic + sha256 sidecar, checkpoint.py); older ones beyond `keep` are
    removed only after the new one is complete, so a crash at any moment leaves a loadable checkpoint."""
    d = logdir / "checkpoints"
    for tmp in d.glob(".ckpt_*"):  # temp files of a write that was killed
        tmp.unlink(missing_ok=True)
    path = d / f"ckpt_{state['update']:07d}.pt"
    save_checkpoint(state, path)
    for old in checkpoint_files(logdir)[:-max(1, keep)]:
        old.unlink(missing_ok=True)  # data first: a crash here leaves a stray sidecar, never a file without one
        for ext in (".sha256", ".sha256.pending"):
            old.with_name(old.name + ext).unlink(missing_ok=True)
    return path


def _load_text_encoder(bundle):
    from flare_policy.text import TextEncoder

    return TextEncoder(bundle.text_encoder["kind"], bundle.text_encoder.get("path"))


def _evaluate(cfg: PPOConfig, bundle, ac: ActorCritic, mask, text_encoder, embodiment: str, vision=None) -> dict:
    from .evaluate import evaluate

    actor = ac.actor if next(ac.actor.parameters()).device.type == "cpu" else copy.deepcopy(ac.actor).cpu()
    shim = SimpleNamespace(model=actor, action_mask=lambda: mask.cpu(), actions=bundle.actions,
                           text_encoder=bundle.text_encoder, embodiment=get_embodiment(embodiment),
                           config=bundle.config, path=bundle.path, cameras=bundle.cameras)
    s = evaluate(shim, cfg.task, cfg.eval_episodes, split="val", greedy=cfg.eval_greedy, n_envs=cfg.eval_envs,
                 text_encoder=text_encoder, embodiment=embodiment, progress=False, env=cfg.env,
                 env_config=cfg.env_config, vision=vision)
    return {"eval/success": s["success"]["mean"], "eval/sel": s["sel"]["mean"],
            "eval/episode_length": s["episode_length"]["mean"]}


def train(cfg: PPOConfig, resume: bool = False, text_encoder=None) -> dict:
    """Run (or resume) PPO; returns a summary (steps/s, time split, last metrics). Raises NonFiniteLoss."""
    cfg.validate()
    world = setup_world(cfg)
    torch.set_num_threads(cfg.threads or auto_threads(world.local_size))
    keep_freed_memory()
    rng = np.random.default_rng(cfg.seed + world.rank)
    device = world.device
    logdir = Path(cfg.logdir)
    out_dir = Path(cfg.out) if cfg.out else logdir / "bundle"
    if not resume and checkpoint_files(logdir):
        raise SystemExit(f"flare-train ppo: {logdir}/checkpoints exists; pass --resume to continue it "
                         "or use another --logdir")

    bundle = load_bundle(cfg.init, with_critic=cfg.critic_init == "bundle")
    embodiment = cfg.embodiment or bundle.embodiment.name
    mask = torch.tensor(get_embodiment(embodiment).action_mask(), dtype=torch.bool, device=device)
    ac = build_actor_critic(cfg, bundle).to(device).eval()  # eval: dropout off in rollouts and updates
    broadcast_params(ac, world)
    torch.manual_seed(cfg.seed + world.rank)  # each rank samples its own actions
    opt = torch.optim.Adam(ac.parameters(), lr=cfg.lr)
    text_encoder = text_encoder or _load_text_encoder(bundle)
    bank = GoalBank(text_encoder)
    vision = load_vision(bundle, device, cfg.vision_encoder_path)  # dinov2 bundles only

    seeds = SeedStream(base=cfg.seed + world.rank * RANK_STRIDE, n_envs=cfg.n_envs)
    envs = make_vec_env(cfg.vec, cfg.task, cfg.n_envs, seeds, workers=cfg.vec_workers or None,
                        dense_reward=cfg.dense_reward, embodiment=embodiment,
                        **backend_env_kwargs(cfg.env, cfg.env_config, bundle))
    update, global_step = 0, 0
    prev = np.full(cfg.n_envs, bundle.config.n_actions, np.int64)
    found = latest_checkpoint(logdir, verbose=world.main) if resume else None
    if resume and checkpoint_files(logdir) and found is None:
        raise SystemExit(f"flare-train ppo: no loadable checkpoint in {logdir}/checkpoints")
    if found is not None:
        ckpt_path, st = found
        if st.get("format") != CHECKPOINT_FORMAT:
            raise SystemExit(f"flare-train ppo: {ckpt_path} is not a PPO checkpoint ({st.get('format')!r})")
        saved = json.loads(st["config"])
        diff = {k: (saved.get(k), getattr(cfg, k)) for k in PPOConfig.RESUME_KEYS if saved.get(k) != getattr(cfg, k)}
        if diff or st["world_size"] != world.size:
            raise SystemExit(f"flare-train ppo: cannot resume {ckpt_path} with a different setup: "
                             f"{diff or ''} world size {st['world_size']} -> {world.size}")
        ac.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        rs = st["ranks"][world.rank]
        torch.set_rng_state(rs["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in rs:
            torch.cuda.set_rng_state(rs["cuda_rng"])
        rng.bit_generator.state = json.loads(rs["numpy_rng"])
        bank.index(json.loads(rs["goals"]))  # same goal rows (and padding) as before the interruption
        obs = envs.restore(json.loads(rs["envs"]))
        prev = rs["prev_action"].numpy().astype(np.int64)
        update, global_step = int(st["update"]), int(st["global_step"])
        if world.main:
            print(f"resumed from {ckpt_path} at update {update} (global step {global_step})", flush=True)
    else:
        obs = envs.reset()
    state = EnvState(obs, prev)

    writer = metrics_file = bar = None
    if world.main:
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        logdir.mkdir(parents=True, exist_ok=True)
        (logdir / "ppo_config.json").write_text(json.dumps(asdict(cfg), indent=2))
        writer = SummaryWriter(str(logdir / "tb"), purge_step=global_step if resume else None)
        metrics_file = open(logdir / "metrics.jsonl", "a")
        n_params = sum(p.numel() for p in ac.parameters())
        print(f"PPO {cfg.task}: {cfg.init} ({cfg.init_weights}), {'separate' if ac.separate else 'shared'} critic, "
              f"{n_params:,} params, {world.size} rank(s) x {cfg.n_envs} envs x {cfg.rollout} steps, "
              f"device {device}, {torch.get_num_threads()} threads", flush=True)
        bar = tqdm(total=cfg.total_steps, initial=global_step, unit="step", desc=f"ppo {cfg.task}",
                   disable=not cfg.progress, dynamic_ncols=True, smoothing=0.3)

    def log(record: dict, step: int):
        if not world.main:
            return
        for k, v in record.items():
            if isinstance(v, (int, float)) and np.isfinite(v):
                writer.add_scalar(k, v, step)
        metrics_file.write(json.dumps({"global_step": step, **record}) + "\n")
        metrics_file.flush()

    if resume and update > 0:
        log({"event/resume": update}, global_step)

    last_ckpt = [found[0] if found else None]

    def checkpoint():
        rank_state = {"torch_rng": torch.get_rng_state(), "numpy_rng": json.dumps(rng.bit_generator.state),
                      "envs": json.dumps(envs.state()), "prev_action": torch.as_tensor(state.prev),
                      "goals": json.dumps(list(bank.index_of))}
        if device.type == "cuda":
            rank_state["cuda_rng"] = torch.cuda.get_rng_state()
        ranks = [None] * world.size
        if world.distributed:
            tdist.all_gather_object(ranks, rank_state)
        else:
            ranks = [rank_state]
        if world.main:
            last_ckpt[0] = _write_checkpoint(
                {"format": CHECKPOINT_FORMAT, "config": json.dumps(asdict(cfg)), "update": update,
                 "global_step": global_step, "world_size": world.size,
                 "model": {k: v.cpu() for k, v in ac.state_dict().items()}, "optimizer": opt.state_dict(),
                 "ranks": ranks}, logdir, cfg.keep_checkpoints)

    evals: list[dict] = []
    if world.main and cfg.eval_every and cfg.eval_at_start and update == 0:
        ev = _evaluate(cfg, bundle, ac, mask, text_encoder, embodiment, vision)
        evals.append({"global_step": 0, **ev})
        log(ev, 0)

    steps_per_update = cfg.n_envs * cfg.rollout * world.size
    timer, t_start, step0 = Timer(), time.perf_counter(), global_step
    last: dict = {}
    try:
        while global_step < cfg.total_steps:
            t_upd = time.perf_counter()
            split0 = dict(timer.t)
            warmup = global_step < cfg.critic_warmup_steps
            ro, episodes = collect_rollout(ac, envs, state, bank, cfg, mask, device, timer, vision)
            adv, ret = compute_gae(ro, cfg.gamma, cfg.gae_lambda)
            t0 = time.perf_counter()
            inp = ro.policy_input(bank, device)
            tt = lambda a, dt=torch.float32: torch.as_tensor(a, dtype=dt, device=device)  # noqa: E731
            b = {"action": tt(ro.action, torch.long), "logprob": tt(ro.logprob), "value": tt(ro.value),
                 "adv": tt(adv), "ret": tt(ret)}
            metrics = ppo_update(ac, opt, inp, b, cfg, mask, warmup, world, rng, update)
            timer.add("update", t0)
            update += 1
            global_step += steps_per_update
            if cfg.debug_checksum_dir:
                d = Path(cfg.debug_checksum_dir)
                d.mkdir(parents=True, exist_ok=True)
                with open(d / f"rank{world.rank}.txt", "a") as f:
                    f.write(f"{update} {params_digest(ac)} {ro.digest()}\n")

            # ---- logging (episode stats summed over ranks)
            n_ep, n_succ, s_ret, s_len = allreduce_sum(
                [len(episodes), sum(e["success"] for e in episodes), sum(e["r"] for e in episodes),
                 sum(e["l"] for e in episodes)], world)
            dt_upd = time.perf_counter() - t_upd
            split = {k: timer.t[k] - split0.get(k, 0.0) for k in timer.t}
            record = {f"losses/{k}": v for k, v in metrics.items() if not k.startswith("consistency")}
            record.update({k: v for k, v in metrics.items() if k.startswith("consistency")})
            record.update({"losses/explained_variance": explained_variance(ro.value.ravel(), ret.ravel()),
                           "charts/update": update, "charts/critic_warmup": float(warmup),
                           "perf/steps_per_s": steps_per_update / dt_upd,
                           **{f"perf/{k}_s": v for k, v in split.items()},
                           "perf/other_s": dt_upd - sum(split.values())})
            if n_ep:
                record.update({"charts/episodes": n_ep, "charts/success_rate": n_succ / n_ep,
                               "charts/episode_return": s_ret / n_ep, "charts/episode_length": s_len / n_ep})
            if world.main:
                bar.update(steps_per_update)
                bar.set_postfix({k.split("/")[1]: f"{record[k]:.3g}" for k in (
                    "charts/success_rate", "losses/value_loss", "losses/approx_kl") if k in record}, refresh=False)
            if world.main and cfg.eval_every and (update % cfg.eval_every == 0 or global_step >= cfg.total_steps):
                ev = _evaluate(cfg, bundle, ac, mask, text_encoder, embodiment, vision)
                evals.append({"global_step": global_step, **ev})
                record.update(ev)
            log(record, global_step)
            last = record
            if cfg.checkpoint_every and (update % cfg.checkpoint_every == 0 or global_step >= cfg.total_steps):
                checkpoint()
    except NonFiniteLoss as e:
        msg = (f"{e}\nstopping before the optimizer step; the last good checkpoint is kept"
               + (f": {last_ckpt[0]}" if last_ckpt[0] else " (none was written yet)"))
        log({"event/nonfinite_stop": update + 1}, global_step)
        raise NonFiniteLoss(msg) from None
    finally:
        envs.close()
        if world.main:
            bar.close()
            writer.close()
            metrics_file.close()

    elapsed = time.perf_counter() - t_start
    summary = {"updates": update, "global_step": global_step, "steps_per_s": (global_step - step0) / max(elapsed, 1e-9),
               "time_s": {k: round(v, 3) for k, v in timer.t.items()}, "wall_s": round(elapsed, 3), "last": last,
               "evals": evals}
    if cfg.checkpoint_every and world.main:
        save_bundle(out_dir, ac.actor.cpu(), embodiment=embodiment, cameras=bundle.cameras,
                    text_encoder=bundle.text_encoder, vision_encoder=bundle.vision_encoder,
                    critic=ac.critic.cpu() if ac.separate else None,
                    provenance={"trainer": "flare-train ppo", "init_bundle": str(cfg.init),
                                "init_provenance": bundle.provenance, "config": asdict(cfg),
                                "global_step": global_step, "updates": update, "world_size": world.size,
                                "evals_this_session": evals})
        summary["bundle"] = str(out_dir)
        print(f"bundle written to {out_dir}", flush=True)
    return summary


# ----------------------------------------------------------------------------------------------- CLI
def _field_help() -> dict[str, str]:
    """The comments next to PPOConfig's fields (one source of truth for --help)."""
    import inspect
    import re

    out: dict[str, str] = {}
    for line in inspect.getsource(PPOConfig).splitlines():
        m = re.match(r"\s+(\w+): [^#]*#\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flare-train ppo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file of PPO options (see training/configs/ppo_objectnav.yaml)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in <logdir>/checkpoints (if any)")
    helps = _field_help()
    for f in fields(PPOConfig):
        flag = "--" + f.name.replace("_", "-")
        hidden = f.name in PPOConfig.HIDDEN
        help_ = argparse.SUPPRESS if hidden else f"{helps.get(f.name, '')} (default {f.default!r})".lstrip()
        if isinstance(f.default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            p.add_argument(flag, dest=f.name, type=type(f.default), default=None, help=help_,
                           metavar=f.name.upper() if not hidden else None)
    return p


def config_from_args(a: argparse.Namespace) -> PPOConfig:
    cfg = PPOConfig.from_yaml(a.config) if a.config else PPOConfig()
    for f in fields(PPOConfig):
        v = getattr(a, f.name, None)
        if v is not None:
            setattr(cfg, f.name, v)
    return cfg


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(a).validate()
    except ValueError as e:
        print(f"flare-train ppo: {e}", file=sys.stderr)
        return 2
    try:
        train(cfg, resume=a.resume)
    except NonFiniteLoss as e:
        print(f"flare-train ppo: {e}", file=sys.stderr)
        return EXIT_NONFINITE
    except ValueError as e:  # a bundle, encoder or environment setting that cannot be used, named by the message
        print(f"flare-train ppo: error: {e}", file=sys.stderr)
        return 2
    finally:
        if tdist.is_initialized():
            tdist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
