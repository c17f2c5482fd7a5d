"""Goal-conditioned visual encoder: [CLS, camera tokens..., text tokens] -> post-LN transformer -> CLS.

Parameter names follow FLaRe's `DinoTxGoalEncoder` (flare_checkpoint_spec.md section 2.1); the fusion
attention keeps q/k/v as separate projections (the converter splits FLaRe's packed `in_proj`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import PolicyConfig


class FusionAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x, key_mask, xq: torch.Tensor | None = None):
        """x: (N, S, D). xq: the first Q positions of x, the only ones that attend (all keys are still used);
        None: all of x."""
        N, S, D = x.shape
        xq = x if xq is None else xq
        Q = xq.shape[1]
        split = lambda t, n: t.view(N, n, self.n_heads, D // self.n_heads).transpose(1, 2)  # noqa: E731
        q = split(self.q_proj(xq), Q)
        k, v = split(self.k_proj(x), S), split(self.v_proj(x), S)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(y.transpose(1, 2).reshape(N, Q, D))


class FusionLayer(nn.Module):
    """nn.TransformerEncoderLayer semantics: post-LN, ReLU FF, dropout after attention and FF."""

    def __init__(self, dim: int, n_heads: int, ff: int, dropout: float):
        super().__init__()
        self.self_attn = FusionAttention(dim, n_heads, dropout)
        self.linear1, self.linear2 = nn.Linear(dim, ff), nn.Linear(ff, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, key_mask, queries: int | None = None):
        """Returns (N, queries or S, D): the outputs of the first `queries` positions only."""
        xq = None if queries is None else x[:, :queries]  # sliced once: one zero-filled gradient, not two
        y = self.self_attn(x, key_mask, xq)
        x = self.norm1((x if xq is None else xq) + self.drop(y))
        return self.norm2(x + self.drop(self.linear2(self.drop(F.relu(self.linear1(x))))))


class FusionEncoder(nn.Module):
    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.layers = nn.ModuleList(FusionLayer(cfg.d_model, cfg.fusion_heads, cfg.fusion_ff, cfg.dropout)
                                    for _ in range(cfg.fusion_layers))

    def forward(self, x, key_mask):
        """x: (N, S, D) -> the CLS output (N, D). Only CLS is read, so the last layer computes queries,
        attention output and feed-forward for CLS alone (the same numbers; ~1/3 less fusion compute)."""
        for i, layer in enumerate(self.layers):
            x = layer(x, key_mask, queries=1 if i == len(self.layers) - 1 else None)
        return x[:, 0]


def _adapter(d_in: int, d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d), nn.LayerNorm(d), nn.ReLU())


class GoalEncoder(nn.Module):
    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        d = cfg.d_model
        self.cfg = cfg
        self.fusion_token = nn.Parameter(0.1 * torch.rand(d))
        for cam in cfg.cameras:
            setattr(self, f"visual_sensor_token_{cam}", nn.Parameter(0.1 * torch.rand(d)))
            if cfg.visual_pos_embed:
                setattr(self, f"visual_pos_embed_{cam}", nn.Parameter(0.02 * torch.randn(cfg.tokens_per_camera, d)))
        self.text_adapter = _adapter(cfg.text_dim, d)
        if cfg.vision == "cnn":  # trainable pixels -> (visual_dim, H/p, W/p) token grid
            c = cfg.visual_dim
            self.visual_backbone = nn.Sequential(
                nn.Conv2d(3, c, cfg.cnn_patch, stride=cfg.cnn_patch), nn.ReLU(),
                nn.Conv2d(c, c, 3, padding=1), nn.ReLU())
        self.visual_compressor = nn.Sequential(nn.Conv2d(cfg.visual_dim, d, 1), nn.ReLU(), nn.Conv2d(d, d, 1), nn.ReLU())
        if cfg.vision == "cnn" and cfg.cnn_kaiming_init:
            for m in [*self.visual_backbone, *self.visual_compressor]:
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)
        self.visual_adapter = _adapter(d, d)
        if cfg.visual_goal_film:
            self.goal_film = nn.Linear(d, 2 * d)
            nn.init.zeros_(self.goal_film.weight)
            nn.init.zeros_(self.goal_film.bias)
        if cfg.visual_flat_readout:
            k = cfg.visual_flat_readout
            self.flat_readout_in = nn.Linear(d, k)
            self.flat_readout_out = nn.Linear(k * cfg.tokens_per_camera * len(cfg.cameras), d)
        self.fusion_xformer = FusionEncoder(cfg)

    def camera_tokens(self, cam: str, x: torch.Tensor) -> torch.Tensor:
        """x: cnn: uint8 frames (N, H, W, 3); dinov2: features (N, C, h, w). Returns (N, h*w, d)."""
        if self.cfg.vision == "cnn":
            x = x.permute(0, 3, 1, 2).float() / 255.0
            if self.cfg.cnn_pixel_norm:
                mean, std = self.cfg.cnn_pixel_norm
                x = (x - mean) / std
            x = self.visual_backbone(x)
        if tuple(x.shape[-2:]) != tuple(self.cfg.visual_grid):
            x = F.adaptive_avg_pool2d(x, self.cfg.visual_grid)
        x = self.visual_compressor(x.float()).flatten(2).transpose(1, 2)  # (N, h*w, d), row-major
        x = self.visual_adapter(x) + getattr(self, f"visual_sensor_token_{cam}")
        return x + getattr(self, f"visual_pos_embed_{cam}") if self.cfg.visual_pos_embed else x

    def forward(self, images: dict[str, torch.Tensor], text: torch.Tensor, text_mask: torch.Tensor,
                goal_index: torch.Tensor) -> torch.Tensor:
        """images[cam]: (N, ...); text: (G, L, text_dim) goal bank; text_mask: (G, L) True = token;
        goal_index: (N,) row of the bank for each item. Returns the fused observation (N, d)."""
        N = goal_index.shape[0]
        cams = [self.camera_tokens(cam, images[cam]) for cam in self.cfg.cameras]
        # the adapter runs on the bank rows in use only (a BC or PPO bank holds hundreds of goals, a batch few)
        rows, inverse = torch.unique(goal_index, return_inverse=True)
        txt_rows = self.text_adapter(text[rows])  # (G', L, d)
        txt = txt_rows[inverse]  # (N, L, d)
        if self.cfg.visual_goal_film:  # pooled per bank row in use, like the adapter
            m = text_mask[rows].unsqueeze(-1).to(txt_rows.dtype)  # (G', L, 1)
            film = self.goal_film((txt_rows * m).sum(1) / m.sum(1).clamp(min=1))[inverse]  # (N, 2d)
            gamma, beta = film.unsqueeze(1).chunk(2, -1)
            cams = [c * (1 + gamma) + beta for c in cams]  # (N, h*w, d) each
        cls = self.fusion_token.expand(N, 1, -1)
        x = torch.cat([cls, *cams, txt], dim=1)
        n_vis = 1 + sum(c.shape[1] for c in cams)
        keep = torch.cat([torch.ones(N, n_vis, dtype=torch.bool, device=x.device), text_mask[goal_index]], 1)
        out = self.fusion_xformer(x, keep[:, None, None, :])  # (N, d)
        if self.cfg.visual_flat_readout:  # the token grid in order: position survives to the decoder
            grid = F.relu(self.flat_readout_in(torch.cat(cams, 1)))  # (N, cameras*h*w, k)
            out = out + self.flat_readout_out(grid.flatten(1))
        return out
