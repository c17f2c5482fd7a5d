"""Glue between mini-CHORES observations and the policy model, shared by BC, evaluation and PPO.

`GoalBank` encodes each distinct goal string once (frozen text encoder) and hands the model a padded bank
plus per-step row indices; `make_input` turns numpy arrays of a (B, T) block into a PolicyInput. Bundles with
frozen DINOv2 vision (FLaRe's own, converted) get features instead of pixels: `load_vision` builds the encoder,
`encode_frames` runs it (once per frame: PPO keeps a rollout's features for its update).
"""
from __future__ import annotations

import sys

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
        new = {g for g in goals if g not in self.index_of}
        prefetch = getattr(self.text_encoder, "prefetch", None)  # TextEncoder has it
        if len(new) > 1 and prefetch is not None:  # one batched pass: a fresh run meets a new goal in every env
            prefetch(new)
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


def camera_frames(rgb) -> dict[str, np.ndarray]:
    """(B, T, H, W, 3) frames of the navigation camera, or (B, T, cameras, H, W, 3) in CAMERA_ORDER -> per camera."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 6:
        return {CAMERA_ORDER[k]: rgb[:, :, k] for k in range(rgb.shape[2])}
    return {NAV_CAMERA: rgb}


def load_vision(bundle, device="cpu", override_path: str = ""):
    """The frozen DINOv2 a `dinov2` bundle's policy reads features from (None for `cnn` bundles, whose CNN reads
    the pixels); `override_path` replaces the bundle's vision_encoder.path. ValueError naming what is missing."""
    if bundle.config.vision != "dinov2":
        return None
    from flare_policy.vision import VisionError, vision_provider_from_spec

    try:
        vision = vision_provider_from_spec(bundle.vision_encoder, device=str(device), override_path=override_path or None)
    except (VisionError, OSError) as e:
        raise ValueError(f"bundle {getattr(bundle, 'path', '')}: vision encoder: {e} (--vision-encoder-path DIR "
                         f"points at a local dinov2-small)") from None
    if vision.dim != bundle.config.visual_dim:
        raise ValueError(f"DINOv2 at {vision.path} has hidden size {vision.dim}; the bundle's policy expects "
                         f"{bundle.config.visual_dim}")
    # the weights the bundle was converted with (weights_sha256), checked as policy_node checks them
    from flare_policy.node_params import ConfigError, check_encoders

    try:
        check_encoders(bundle, None, vision, warn=lambda msg: print(f"warning: {msg}", file=sys.stderr))
    except ConfigError as e:
        raise ValueError(f"{e} (--vision-encoder-path DIR points at the matching dinov2-small)") from None
    return vision


@torch.no_grad()
def encode_frames(frames: dict[str, np.ndarray], vision, device="cpu", chunk: int = 256) -> dict[str, torch.Tensor]:
    """{camera: (B, T, H, W, 3) uint8} -> {camera: (B, T, C, h, w) float32 DINOv2 features} on `device`, `chunk`
    frames per ViT batch (FLaRe's frozen encoder: no gradient, the same features in rollout and update)."""
    out = {}
    for name, x in frames.items():
        B, T = x.shape[:2]
        flat = torch.as_tensor(np.ascontiguousarray(x), device=device).flatten(0, 1)
        feats = torch.cat([vision(flat[i:i + chunk]) for i in range(0, len(flat), chunk)])
        out[name] = feats.to(device).view(B, T, *feats.shape[1:])
    return out


def make_input(rgb, goal_index, prev_action, in_hand, step, bank: GoalBank, device="cpu", vision=None,
               features: dict[str, torch.Tensor] | None = None) -> PolicyInput:
    """numpy (B, T, H, W, 3) uint8 frames (or (B, T, cameras, H, W, 3), see CAMERA_ORDER) and (B, T) ints
    -> PolicyInput on `device`. `vision` (dinov2 bundles): the frames become its features here; `features`:
    features computed before ({camera: (B, T, C, h, w)}; `rgb` is then not read)."""
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.long, device=device)  # noqa: E731
    text, mask = bank.tensors(device)
    if features is not None:
        images = {k: v.to(device) for k, v in features.items()}
    elif vision is not None:
        images = encode_frames(camera_frames(rgb), vision, device)
    else:
        images = {k: torch.as_tensor(v, device=device) for k, v in camera_frames(rgb).items()}
    return PolicyInput(images, text, mask,
                       t(goal_index), t(prev_action), t(in_hand), t(step))
