"""Glue between mini-CHORES observations and the policy model, shared by BC, evaluation and PPO.

`GoalBank` encodes each distinct goal string once (frozen text encoder) and hands the model a padded bank
plus per-step row indices; `make_input` turns numpy arrays of a (B, T) block into a PolicyInput.
"""
from __future__ import annotations

import numpy as np
import torch
from flare_policy.model import PolicyInput
from flare_policy.text import TextEncoder

NAV_CAMERA = "raw_navigation_camera"
# A frame block with a camera axis, (B, T, cameras, ...), holds these cameras in this order (AI2-THOR backend).
CAMERA_ORDER = (NAV_CAMERA, "raw_manipulation_camera")


class GoalBank:
    def __init__(self, text_encoder: TextEncoder):
        self.text_encoder = text_encoder
        self.index_of: dict[str, int] = {}
        self._feats: list[torch.Tensor] = []
        self._tensors = None

    def __len__(self) -> int:
        return len(self._feats)

    def index(self, goals) -> np.ndarray:
        out = np.empty(len(goals), dtype=np.int64)
        for i, g in enumerate(goals):
            j = self.index_of.get(g)
            if j is None:
                j = self.index_of[g] = len(self._feats)
                self._feats.append(self.text_encoder.encode(g))
                self._tensors = None
            out[i] = j
        return out

    def tensors(self, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(G, L, dim) features and (G, L) mask for every goal seen so far."""
        if self._tensors is None:
            L = max(f.shape[0] for f in self._feats)
            text = torch.zeros(len(self._feats), L, self._feats[0].shape[1])
            mask = torch.zeros(len(self._feats), L, dtype=torch.bool)
            for i, f in enumerate(self._feats):
                text[i, : f.shape[0]], mask[i, : f.shape[0]] = f, True
            self._tensors = (text, mask)
        text, mask = self._tensors
        return text.to(device), mask.to(device)


def make_input(rgb, goal_index, prev_action, in_hand, step, bank: GoalBank, device="cpu") -> PolicyInput:
    """numpy (B, T, H, W, 3) uint8 frames (or (B, T, cameras, H, W, 3), see CAMERA_ORDER) and (B, T) ints
    -> PolicyInput on `device`."""
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.long, device=device)  # noqa: E731
    text, mask = bank.tensors(device)
    rgb = np.asarray(rgb)
    images = ({CAMERA_ORDER[k]: torch.as_tensor(rgb[:, :, k], device=device) for k in range(rgb.shape[2])}
              if rgb.ndim == 6 else {NAV_CAMERA: torch.as_tensor(rgb, device=device)})
    return PolicyInput(images, text, mask,
                       t(goal_index), t(prev_action), t(in_hand), t(step))
