"""LLaMA-style causal decoder (RMSNorm, SwiGLU, no RoPE) with a rolling, episode-aware KV-cache.

Two equivalent ways to run it:
  * `forward(x, mask=episode_window_mask(...))` over a whole (B, T) sequence (PPO update, BC training);
  * `forward(x[:, None], cache=cache)` one step at a time for all envs (rollouts, the robot).
Env b at a cached step attends to the last min(steps since its episode started, W) steps, including the
current one; the full-sequence mask allows exactly the same keys. Position enters only through the
sinusoidal episode-step encoding added to the input, so keys can live in a ring buffer in any slot order.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class KVCache:
    """Ring buffer of keys/values for all decoder layers, batched over envs with independent episode starts.

    k, v: (layers, B, heads, W, head_dim). `pos` counts steps written (shared by all envs, which step
    together); `length[b]` counts the valid steps of env b's current episode, capped at W.
    """

    def __init__(self, n_layers: int, batch: int, window: int, n_heads: int, head_dim: int,
                 device=None, dtype=torch.float32):
        if window < 1:
            raise ValueError("KV window must be >= 1")
        shape = (n_layers, batch, n_heads, window, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.window = window
        self.pos = 0
        self.length = torch.zeros(batch, dtype=torch.long, device=device)

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    def reset(self, envs: torch.Tensor | None = None) -> None:
        """Forget the context of the given envs (bool mask or indices); all envs if None."""
        # Not in place: after a step under torch.inference_mode() `length` is an inference tensor, which
        # cannot be modified in place outside it (PolicyRunner.start_episode after act()).
        if envs is None:
            self.length = torch.zeros_like(self.length)
        else:
            length = self.length.clone()
            length[envs] = 0
            self.length = length

    def advance(self) -> tuple[int, int, torch.Tensor]:
        """Claim the slot for the next step; returns (slot, n_slots_in_use, attention mask (B, 1, 1, n))."""
        W = self.window
        slot = self.pos % W
        self.length = torch.clamp(self.length + 1, max=W)
        n = min(self.pos + 1, W)  # slots beyond pos were never written
        age = (slot - torch.arange(n, device=self.length.device)) % W  # 0 = current step
        mask = age[None, :] < self.length[:, None]
        self.pos += 1
        return slot, n, mask[:, None, None, :]


def episode_window_mask(step: torch.Tensor, window: int) -> torch.Tensor:
    """Full-sequence mask equal to the KV-cache's: causal, same episode, at most `window` steps back.

    step: (B, T) episode step index; a new episode starts wherever step == 0 (the first row of a
    sequence may continue an episode whose earlier steps are not part of it). Returns (B, 1, T, T) bool.
    """
    B, T = step.shape
    episode = torch.cumsum((step == 0).long(), dim=1)
    idx = torch.arange(T, device=step.device)
    causal = (idx[None, :] <= idx[:, None]) & (idx[:, None] - idx[None, :] < window)
    same = episode[:, :, None] == episode[:, None, :]
    return (causal[None] & same)[:, None]


class Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x, mask, cache: KVCache | None = None, layer: int = 0, slot: int = 0, n: int = 0):
        B, T, D = x.shape
        q, k, v = (w(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        if cache is not None:  # T == 1: write this step's k/v, attend over the slots in use
            cache.k[layer, :, :, slot] = k[:, :, 0]
            cache.v[layer, :, :, slot] = v[:, :, 0]
            k, v = cache.k[layer, :, :, :n], cache.v[layer, :, :, :n]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, hd)
        return self.wo(y.transpose(1, 2).reshape(B, T, D))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)  # gate
        self.w2 = nn.Linear(hidden, dim, bias=False)  # down
        self.w3 = nn.Linear(dim, hidden, bias=False)  # up

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, n_heads: int, hidden: int, eps: float):
        super().__init__()
        self.attention = Attention(dim, n_heads)
        self.feed_forward = FeedForward(dim, hidden)
        self.attention_norm = RMSNorm(dim, eps)
        self.ffn_norm = RMSNorm(dim, eps)

    def forward(self, x, mask, **cache_kw):
        x = x + self.attention(self.attention_norm(x), mask, **cache_kw)
        return x + self.feed_forward(self.ffn_norm(x))


class TransformerDecoder(nn.Module):
    def __init__(self, dim: int, n_layers: int, n_heads: int, hidden: int, eps: float = 1e-5):
        super().__init__()
        self.n_heads = n_heads
        self.layers = nn.ModuleList(DecoderLayer(dim, n_heads, hidden, eps) for _ in range(n_layers))
        self.norm = RMSNorm(dim, eps)
        self.output = nn.Linear(dim, dim, bias=False)  # 512-d belief in FLaRe

    def new_cache(self, batch: int, window: int, device=None, dtype=torch.float32) -> KVCache:
        dim = self.output.in_features
        return KVCache(len(self.layers), batch, window, self.n_heads, dim // self.n_heads, device, dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, cache: KVCache | None = None):
        """x: (B, T, D). Full sequence: pass `mask` (B, 1, T, T). Cached step: T == 1, pass `cache`."""
        if cache is not None:
            if x.shape[1] != 1:
                raise ValueError("cached decoding takes one step at a time")
            slot, n, mask = cache.advance()
            for i, layer in enumerate(self.layers):
                x = layer(x, mask, cache=cache, layer=i, slot=slot, n=n)
        else:
            for layer in self.layers:
                x = layer(x, mask)
        return self.output(self.norm(x)).float()
