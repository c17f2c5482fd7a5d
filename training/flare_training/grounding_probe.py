"""Grounding probe: can the `tiny` goal encoder learn whether the object in front of the agent matches the goal?

Single ObjectNav frames with the agent placed next to each object of a layout, facing it; label = a matching
object is in front (`front_is_target`). A freshly initialised encoder (or parts of it) plus a small head is
trained on balanced batches and the validation accuracy on positives / negatives is printed. An MLP on the raw
front-cell pixels and a one-hot goal solves this in a few hundred steps; the question is which stage of the
policy's encoder does not.

    python -m flare_training.grounding_probe --readout fusion          # the policy's encoder, as BC trains it
    python -m flare_training.grounding_probe --readout front --fix-cnn # the front cell's token only, fixed CNN init
    python -m flare_training.grounding_probe --text minilm --fix-cnn --lr 3e-4 --flat-readout 8  # with the spatial readout

--readout: fusion = GoalEncoder output (CLS of the fusion transformer); front = the front cell's visual token
(backbone, compressor, adapter) concatenated with the pooled goal; backbone = the CNN backbone's front cell.
--fix-cnn: the model options `cnn_pixel_norm` (the training frames' pixel mean and std) and `cnn_kaiming_init`
(Kaiming-normal weights, zero biases in the CNN and the compressor) (PyTorch's default init leaves ~45% of those units dead on every frame and the image-dependent part
of a token at ~3% of its size).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from minigrid.core.constants import DIR_TO_VEC
from torch import nn

from .envs.levels import OBJ_TYPES

# one-hot slot of each colour (a fixed order, not minigrid's sorted COLOR_NAMES: the logged runs used this layout)
ONE_HOT_COLORS = ("red", "green", "blue", "purple", "yellow", "grey")



class OneHotGoals:
    """Text-encoder stand-in: two tokens, one-hot colour and one-hot type (isolates the visual side)."""

    dim = 384

    def encode(self, goal: str) -> torch.Tensor:
        words = goal.split()
        f = torch.zeros(2, self.dim)
        f[0, next(i for i, c in enumerate(ONE_HOT_COLORS) if c in words)] = 3.0
        f[1, 10 + next(i for i, t in enumerate(OBJ_TYPES) if t in words)] = 3.0
        return f

    def prefetch(self, goals) -> None:
        pass


def collect(env, seeds):
    """Frames with the agent next to each object, facing it, and whether that object matches the goal."""
    frames, goals, labels = [], [], []
    for s in seeds:
        env.reset(seed=int(s))
        lv = env.unwrapped
        for obj in [o for row in lv.room_grid for room in row for o in room.objs]:
            if obj.cur_pos is None:
                continue
            ox, oy = obj.cur_pos
            for d, (dx, dy) in enumerate(DIR_TO_VEC):
                ax, ay = ox - dx, oy - dy
                if 0 < ax < lv.width and 0 < ay < lv.height and lv.grid.get(ax, ay) is None:
                    lv.agent_pos, lv.agent_dir = (ax, ay), d
                    o = env._obs()
                    frames.append(o["rgb"])
                    goals.append(o["goal"])
                    labels.append(int(lv.front_is_target()))
                    break
    return np.stack(frames), goals, np.asarray(labels)


@torch.no_grad()
def init_stats(enc, X, goal_index, text, mask, front: int) -> None:
    """How much of each stage's output depends on the frame, how many units are off on every frame, and how
    peaked the CLS attention of the first fusion layer is."""
    x = torch.as_tensor(X)
    h = x.permute(0, 3, 1, 2).float() / 255.0
    if enc.cfg.cnn_pixel_norm:
        h = (h - enc.cfg.cnn_pixel_norm[0]) / enc.cfg.cnn_pixel_norm[1]
    h = enc.visual_backbone(h)
    stages = [("backbone", h)]
    for i, layer in enumerate(enc.visual_compressor):
        h = layer(h)
        stages.append((f"compressor[{i}]", h))
    t = h.flatten(2).transpose(1, 2)
    for i, layer in enumerate(enc.visual_adapter):
        t = layer(t)
        stages.append((f"adapter[{i}]", t))
    for name, v in stages:
        f = v[:, :, 5, 3] if v.dim() == 4 else v[:, front]  # the front cell
        print(f"  {name:14s} front cell: std over frames {f.std(0).mean():.4f}  mean |x| {f.abs().mean():.4f}  "
              f"units off on every frame {(f.amax(0) <= 0).float().mean():.2f}")
    gi = torch.as_tensor(goal_index)
    tokens = enc.camera_tokens("raw_navigation_camera", x)
    seq = torch.cat([enc.fusion_token.expand(len(x), 1, -1), tokens, enc.text_adapter(text[gi])], 1)
    att = enc.fusion_xformer.layers[0].self_attn
    q, k = att.q_proj(seq[:, :1]), att.k_proj(seq)
    w = torch.softmax(q @ k.transpose(1, 2) / seq.shape[-1] ** 0.5, -1)[:, 0]  # heads pooled
    print(f"  CLS attention over {seq.shape[1]} tokens: on the front cell {w[:, 1 + front].mean():.4f}, "
          f"largest {w.max(-1).values.mean():.4f}, uniform {1 / seq.shape[1]:.4f}")


def main(argv=None) -> int:
    from flare_policy.cpuinfo import describe
    from flare_policy.model import PolicyNet, tiny
    from flare_policy.text import TextEncoder

    from .agent import GoalBank
    from .envs import make_env

    p = argparse.ArgumentParser(prog="python -m flare_training.grounding_probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readout", choices=("fusion", "front", "backbone"), default="fusion")
    p.add_argument("--text", choices=("minilm", "onehot"), default="onehot")
    p.add_argument("--fix-cnn", action="store_true", help="standardised pixels, Kaiming init, zero biases")
    p.add_argument("--film", type=int, default=1, help="visual_goal_film (default 1)")
    p.add_argument("--pos-embed", type=int, default=0, help="visual_pos_embed (default 0)")
    p.add_argument("--pos-scale", type=float, default=0.02, help="init std of the position embedding (default 0.02)")
    p.add_argument("--flat-readout", type=int, default=0, help="visual_flat_readout channels (default 0: off)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-seeds", type=int, default=3000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--text-standardize", action="store_true",
                   help="standardise each text-feature dimension over the bank's tokens before the adapter")
    p.add_argument("--stats", action="store_true", help="print the initial encoder's signal statistics first")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    print(describe())
    env = make_env("objectnav")
    t0 = time.time()
    Xtr, Gtr, Ytr = collect(env, range(a.train_seeds))
    Xva, Gva, Yva = collect(env, range(10**9, 10**9 + 300))
    print(f"frames: {len(Ytr)} train, {len(Yva)} val, {Ytr.mean():.3f} positive ({time.time() - t0:.0f} s)")
    fix = dict(cnn_pixel_norm=(float(Xtr.mean() / 255), float(Xtr.std() / 255)), cnn_kaiming_init=True) if a.fix_cnn else {}
    enc = PolicyNet(tiny(visual_goal_film=bool(a.film), visual_pos_embed=bool(a.pos_embed),
                         visual_flat_readout=a.flat_readout, **fix)).visual_encoder
    if a.pos_embed:
        with torch.no_grad():
            enc.visual_pos_embed_raw_navigation_camera.normal_(0.0, a.pos_scale)
    bank = GoalBank(OneHotGoals() if a.text == "onehot" else TextEncoder("minilm"))
    bank.text_encoder.prefetch(Gtr + Gva)
    bank.index(sorted(set(Gtr + Gva)))
    text, mask = bank.tensors()
    if a.text_standardize:
        tok = text[mask]  # (tokens, dim)
        text = torch.where(mask[..., None], (text - tok.mean(0)) / (tok.std(0) + 1e-2), 0.0)
    d = enc.cfg.d_model
    head = nn.Sequential(nn.Linear(d if a.readout == "fusion" else 2 * d, 256), nn.ReLU(), nn.Linear(256, 1))
    front = 5 * 7 + 3  # view cell (column 3, row 5): in front of the agent at (3, 6)

    def logits(X, G):
        gi = torch.as_tensor(bank.index(G))
        x = torch.as_tensor(X)
        if a.readout == "fusion":
            return head(enc({"raw_navigation_camera": x}, text, mask, gi)).squeeze(-1)
        goal = enc.text_adapter(text[gi]).mean(1)
        if a.readout == "backbone":
            v = enc.visual_backbone(x.permute(0, 3, 1, 2).float() / 255.0)[:, :, 5, 3]  # (default pixels)
            v = F.pad(v, (0, d - enc.cfg.visual_dim))
        else:
            v = enc.camera_tokens("raw_navigation_camera", x)[:, front]
        return head(torch.cat([v, goal], -1)).squeeze(-1)

    if a.stats:
        init_stats(enc, Xva[:256], bank.index(Gva[:256]), text, mask, front)
        if a.text == "minilm":  # how much of a goal's features is its colour
            red, blue = (bank.text_encoder.encode(f"find the {c} ball") for c in ("red", "blue"))
            cos = lambda u, v: float(F.cosine_similarity(u, v, 0))  # noqa: E731
            print(f"  MiniLM 'find the red ball' vs 'find the blue ball': mean-pooled cosine {cos(red.mean(0), blue.mean(0)):.3f},"
                  f" colour tokens {cos(red[3], blue[3]):.3f}")
    params = list(enc.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=a.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    pos, neg = np.flatnonzero(Ytr == 1), np.flatnonzero(Ytr == 0)
    y_va = torch.as_tensor(Yva == 1)
    print(f"readout={a.readout} text={a.text} fix_cnn={a.fix_cnn} film={a.film} pos_embed={a.pos_embed} (init std {a.pos_scale}) "
          f"flat_readout={a.flat_readout} text_standardize={a.text_standardize}")
    for step in range(a.steps):
        idx = np.r_[rng.choice(pos, 32), rng.choice(neg, 32)]
        loss = F.binary_cross_entropy_with_logits(logits(Xtr[idx], [Gtr[i] for i in idx]),
                                                  torch.as_tensor(Ytr[idx], dtype=torch.float))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if (step + 1) % 250 == 0:
            with torch.no_grad():
                pred = logits(Xva, Gva) > 0
            print(f"step {step + 1:5d}  loss {loss.item():.3f}  val accuracy: positives {pred[y_va].float().mean():.3f}"
                  f"  negatives {(~pred[~y_va]).float().mean():.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
