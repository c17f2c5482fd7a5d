"""Frozen DINOv2 ViT-S/14 visual tokens with FLaRe's preprocessing (flare_checkpoint_spec.md section 5, steps 2-5).

    uint8 (N, 224, 384, 3) -> /255 -> CLIP mean/std -> crop 3 px per side of the width (224 x 378)
    -> DINOv2 `x_norm_patchtokens` (16 x 27 patches) -> (N, 384, 16, 27) -> AdaptiveAvgPool2d((7, 12))

The weights come from a local `transformers` directory (config.json + model.safetensors), never from a hub.
One difference from HF's Dinov2 is corrected here: HF resizes the 37x37 position embedding to an output *size*
of (16, 27), while the torch.hub DINOv2 FLaRe ran uses *scale factors* ((16 + 0.1)/37, (27 + 0.1)/37), which
samples a slightly different grid (see `flare_pos_embed`).
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FRAME_HW = (224, 384)  # what the cameras deliver after preprocess.prepare_frame
CROP_W = 3  # columns dropped on each side -> 378 = 27 * 14
POOL_HW = (7, 12)  # 84 tokens per camera
INTERPOLATE_OFFSET = 0.1  # DINOv2's "historical kludge" (dinov2/models/vision_transformer.py)

# facebook/dinov2-small (ViT-S/14, 518 px pretraining grid = 37 x 37 patches)
VITS14_CONFIG = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, patch_size=14,
                     image_size=518, layer_norm_eps=1e-6, layerscale_value=1.0, qkv_bias=True, use_swiglu_ffn=False)


class VisionError(ValueError):
    """A vision encoder that cannot be built (missing directory, wrong model) or a frame batch it refuses."""


def flare_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], offset: float = INTERPOLATE_OFFSET) -> torch.Tensor:
    """DINOv2's own interpolation rule: (1, 1 + M*M, C) -> (1, 1 + h*w, C), bicubic with scale factors
    ((h + offset)/M, (w + offset)/M), antialias off, computed in float32. Torch derives the source coordinate
    from the scale factor, so this is not the same grid as resizing to size (h, w)."""
    cls, patch = pos_embed[:, :1], pos_embed[:, 1:]
    n, C = patch.shape[1], patch.shape[2]
    M = math.isqrt(n)
    if M * M != n:
        raise VisionError(f"position embedding has {n} patch entries, not a square grid")
    h, w = grid
    patch = patch.float().reshape(1, M, M, C).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, scale_factor=((h + offset) / M, (w + offset) / M), mode="bicubic",
                          antialias=False)
    assert patch.shape[-2:] == (h, w), patch.shape
    patch = patch.permute(0, 2, 3, 1).reshape(1, h * w, C)
    return torch.cat([cls.float(), patch], dim=1).to(pos_embed.dtype)


def quantize_linear(module: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of every nn.Linear (weights int8, activations quantized per batch)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        return torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8)


class Dinov2Features(nn.Module):
    """Callable: uint8 frames (N, 224, 384, 3) -> float32 features (N, 384, 7, 12). Frozen, eval mode.

    Options (all off = FLaRe-faithful fp32): `quantize` = dynamic int8 linears, `channels_last` for the patch
    conv input. `encode_cameras` runs several cameras through the ViT in one batch.
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu", quantize: bool = False,
                 channels_last: bool = False):
        super().__init__()
        from transformers import Dinov2Model
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if quantize and torch.device(device).type != "cpu":
            raise VisionError("dynamic int8 quantization runs on the CPU only; use quantize=False on other devices")
        path = Path(path)
        if not (path / "config.json").is_file():
            raise VisionError(f"DINOv2 directory {path} has no config.json (expected a transformers Dinov2Model "
                              f"saved with save_pretrained, e.g. facebook/dinov2-small)")
        try:
            vit = Dinov2Model.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as e:
            raise VisionError(f"cannot load DINOv2 from {path}: {e}") from None
        cfg = vit.config
        patch = cfg.patch_size if isinstance(cfg.patch_size, int) else cfg.patch_size[0]
        H, W = FRAME_HW[0], FRAME_HW[1] - 2 * CROP_W
        if H % patch or W % patch:
            raise VisionError(f"DINOv2 patch size {patch} does not tile the {H}x{W} FLaRe input")
        self.path, self.dim, self.patch, self.grid = str(path), cfg.hidden_size, patch, (H // patch, W // patch)
        vit.eval().requires_grad_(False)
        from .convert import tensor_fingerprint
        # of the fp32 weights as loaded (before any quantization): what a bundle's weights_sha256 records
        self.weights_sha256 = tensor_fingerprint(vit.state_dict())
        self.vit = quantize_linear(vit) if quantize else vit
        # Replace HF's size-based interpolation with FLaRe's rule; the input size is fixed, so compute it once.
        pos = flare_pos_embed(self.vit.embeddings.position_embeddings.detach(), self.grid)
        self.register_buffer("pos_embed", pos, persistent=False)
        self.vit.embeddings.interpolate_pos_encoding = self._pos_encoding
        self.quantized, self.channels_last = quantize, channels_last
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.to(device)
        self.device = device

    def _pos_encoding(self, embeddings, height: int, width: int) -> torch.Tensor:
        grid = (height // self.patch, width // self.patch)
        if grid == self.grid:
            return self.pos_embed
        return flare_pos_embed(self.vit.embeddings.position_embeddings, grid)

    def normalize(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 224, 384, 3) -> CLIP-normalised, width-cropped (N, 3, 224, 378) float32."""
        if frames.dtype != torch.uint8 or frames.ndim != 4 or tuple(frames.shape[1:]) != (*FRAME_HW, 3):
            raise VisionError(f"expected uint8 frames (N, {FRAME_HW[0]}, {FRAME_HW[1]}, 3), "
                              f"got {frames.dtype} {tuple(frames.shape)}")
        x = frames.to(self.mean.device).permute(0, 3, 1, 2).float() / 255.0
        x = ((x - self.mean) / self.std)[..., CROP_W: FRAME_HW[1] - CROP_W]
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()

    @torch.no_grad()  # not inference_mode: the features may feed a trainable compressor (BC, PPO)
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.normalize(frames)
        tokens = self.vit(pixel_values=x).last_hidden_state[:, 1:]  # x_norm_patchtokens (N, 432, C)
        N, P, C = tokens.shape
        h, w = self.grid
        fmap = tokens.transpose(1, 2).reshape(N, C, h, w)
        return F.adaptive_avg_pool2d(fmap, POOL_HW).float()

    def encode_cameras(self, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """All cameras through the ViT in one batch (same result as one call per camera)."""
        names = list(images)
        sizes = [images[k].shape[0] for k in names]
        feats = self(torch.cat([images[k] for k in names])).split(sizes)
        return dict(zip(names, feats))


def vision_provider_from_spec(spec: dict, device: str = "cpu", override_path: str | os.PathLike | None = None,
                              **options) -> Dinov2Features:
    """The frozen vision encoder a bundle names: `{"kind": "dinov2", "path": DIR}`; `override_path` (e.g. a
    robot-local copy) wins over the bundle's path. `options` go to Dinov2Features (quantize, channels_last)."""
    if not isinstance(spec, dict) or spec.get("kind") != "dinov2":
        raise VisionError(f"vision encoder {spec!r} is not a DINOv2 spec ({{'kind': 'dinov2', 'path': DIR}})")
    path = override_path or spec.get("path")
    if not path:
        raise VisionError("the bundle's vision_encoder has no DINOv2 path; pass the directory of a local "
                          "dinov2-small (transformers format) explicitly")
    if not Path(path).is_dir():
        raise VisionError(f"DINOv2 directory {path} does not exist (the bundle's vision_encoder.path; "
                          f"override it with a local copy of dinov2-small)")
    return Dinov2Features(path, device=device, **options)


def random_dinov2(out_dir: str | os.PathLike, seed: int = 0, **overrides) -> Path:
    """Write a random-weight DINOv2 (ViT-S/14 shapes unless overridden) for tests and benchmarks."""
    from transformers import Dinov2Config, Dinov2Model
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(seed)
    model = Dinov2Model(Dinov2Config(**{**VITS14_CONFIG, **overrides})).eval()
    out = Path(out_dir)
    model.save_pretrained(str(out))
    return out
