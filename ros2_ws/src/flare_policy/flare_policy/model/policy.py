"""The SPOC/FLaRe policy: goal-conditioned encoder -> step token -> LLaMA decoder -> actor/critic heads.

step token z_t = obs_embed + last_action_embed[prev] + in_hand_embed[h] + PE(episode step)
(prev = n_actions on the first step of an episode; FLaRe's row 20 for 20 actions).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.distributions import Categorical

from .config import PolicyConfig
from .decoder import KVCache, TransformerDecoder, episode_window_mask
from .encoder import GoalEncoder


@dataclass
class PolicyInput:
    """A (B, T) block of observations. Cached stepping uses T == 1.

    images[cam]: cnn: uint8 (B, T, H, W, 3); dinov2: float features (B, T, C, h, w)
    text, text_mask: goal bank (G, L, text_dim) / (G, L) bool; goal_index: (B, T) rows of the bank
    prev_action: (B, T) previous action, n_actions at an episode's first step
    in_hand: (B, T) 0/1; step: (B, T) episode step, 0 at an episode's first step
    """
    images: dict[str, torch.Tensor]
    text: torch.Tensor
    text_mask: torch.Tensor
    goal_index: torch.Tensor
    prev_action: torch.Tensor
    in_hand: torch.Tensor
    step: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.step.shape)

    def to(self, device) -> "PolicyInput":
        return replace(self, images={k: v.to(device) for k, v in self.images.items()},
                       **{f: getattr(self, f).to(device) for f in
                          ("text", "text_mask", "goal_index", "prev_action", "in_hand", "step")})


class StepEncoding(nn.Module):
    """Interleaved sin/cos of the raw episode step (FLaRe `time_encoder`, base 1e4)."""

    def __init__(self, d: int):
        super().__init__()
        self.register_buffer("div_term", torch.exp(torch.arange(0, d, 2).float() * (-math.log(10000.0) / d)))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        ang = t.float()[..., None] * self.div_term  # (..., d/2)
        return torch.stack([ang.sin(), ang.cos()], dim=-1).flatten(-2)


class ActorHead(nn.Module):
    def __init__(self, d: int, n: int):
        super().__init__()
        self.linear = nn.Linear(d, n)
        nn.init.orthogonal_(self.linear.weight, gain=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x):
        return self.linear(x)


class CriticHead(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.fc = nn.Linear(d, 1)
        nn.init.orthogonal_(self.fc.weight, gain=1.0)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x):
        return self.fc(x).squeeze(-1)


def apply_action_mask(logits: torch.Tensor, action_mask: torch.Tensor | None) -> torch.Tensor:
    """Invalid actions (mask False) get -inf logits. action_mask: (A,) or broadcastable to logits."""
    if action_mask is None:
        return logits
    return logits.masked_fill(~action_mask.to(logits.device, torch.bool), float("-inf"))


class PolicyNet(nn.Module):
    """One full copy (FLaRe `DinoLLAMATxNavActorCritic`): encoder, decoder, actor and critic heads."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d, n = cfg.d_model, cfg.n_actions
        self.visual_encoder = GoalEncoder(cfg)
        self.last_actions_embed = nn.Embedding(n + 2, d, padding_idx=n + 1)  # n = episode start, n+1 = IL pad
        self.object_in_hand_embed = nn.Embedding(3, d)  # 2 = IL pad
        for emb in (self.last_actions_embed, self.object_in_hand_embed):
            nn.init.uniform_(emb.weight, -0.01, 0.01)
        with torch.no_grad():
            self.last_actions_embed.weight[n + 1].zero_()
        self.time_encoder = StepEncoding(d)
        self.decoder = TransformerDecoder(d, cfg.decoder_layers, cfg.decoder_heads, cfg.decoder_ff, cfg.norm_eps)
        self.actor = ActorHead(d, n)
        self.critic = CriticHead(d)

    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def step_tokens(self, inp: PolicyInput) -> torch.Tensor:
        """(B, T) observations -> decoder input (B, T, d)."""
        B, T = inp.shape
        flat = {k: v.flatten(0, 1) for k, v in inp.images.items()}
        obs = self.visual_encoder(flat, inp.text, inp.text_mask, inp.goal_index.flatten()).view(B, T, -1)
        return (obs + self.last_actions_embed(inp.prev_action) + self.object_in_hand_embed(inp.in_hand)
                + self.time_encoder(inp.step))

    def forward(self, inp: PolicyInput, cache: KVCache | None = None, window: int | None = None,
                action_mask: torch.Tensor | None = None):
        """Full sequence (cache None; `window` = the cache window to emulate, default T) or one cached step.

        Returns logits (B, T, A) with masked actions at -inf, value (B, T), belief (B, T, d).
        """
        z = self.step_tokens(inp)
        if cache is None:
            mask = episode_window_mask(inp.step, window or z.shape[1])
            belief = self.decoder(z, mask=mask)
        else:
            belief = self.decoder(z, cache=cache)
        return apply_action_mask(self.actor(belief), action_mask), self.critic(belief), belief

    def new_cache(self, batch: int, window: int, device=None) -> KVCache:
        return self.decoder.new_cache(batch, window, device=device)


class ActorCritic(nn.Module):
    """FLaRe's actor/critic: `separate_critic` = a complete second copy whose value head alone is used,
    so value gradients never reach the actor (and policy gradients never reach the critic copy)."""

    def __init__(self, cfg: PolicyConfig, separate_critic: bool = True):
        super().__init__()
        self.actor = PolicyNet(cfg)
        self.critic = PolicyNet(cfg) if separate_critic else None

    @property
    def separate(self) -> bool:
        return self.critic is not None

    def new_caches(self, batch: int, window: int, device=None) -> tuple[KVCache, KVCache | None]:
        return (self.actor.new_cache(batch, window, device),
                self.critic.new_cache(batch, window, device) if self.separate else None)

    def forward(self, inp: PolicyInput, caches=None, window: int | None = None, action_mask=None):
        """Returns (Categorical over actions, value (B, T))."""
        ca, cc = caches if caches is not None else (None, None)
        logits, value, _ = self.actor(inp, cache=ca, window=window, action_mask=action_mask)
        if self.separate:
            _, value, _ = self.critic(inp, cache=cc, window=window)
        return Categorical(logits=logits.float()), value.float()  # fp32 even under autocast

    def reset_envs(self, caches, envs) -> None:
        for c in caches:
            if c is not None:
                c.reset(envs)
