"""Model configuration: one module tree, two scales (FLaRe's `small_3` and a CPU-sized `tiny`)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields


@dataclass
class PolicyConfig:
    n_actions: int = 20
    d_model: int = 512
    cameras: tuple[str, ...] = ("raw_navigation_camera", "raw_manipulation_camera")
    # "dinov2": frozen DINOv2 features come from outside the model (FLaRe keeps DINO in the preprocessor);
    # "cnn": a small trainable CNN inside the model turns uint8 RGB frames into a token grid.
    vision: str = "dinov2"
    visual_dim: int = 384  # channels entering the 1x1 compressor (DINOv2-S: 384)
    visual_grid: tuple[int, int] = (7, 12)  # token grid per camera (FLaRe: 84 tokens)
    image_size: tuple[int, int] = (224, 384)  # (H, W) of the frame the provider sees
    cnn_patch: int = 8  # cnn only: stride of the patchify conv (MiniGrid tile size)
    # A learned embedding per token-grid position, added to each camera's tokens. DINOv2 features carry their
    # own position; a small CNN's tokens know only their 3x3 neighbourhood (the agent's cell among them). Off in
    # `tiny`: PickUp BC with FiLM, 1,000 steps, reached 26.5% with it and 52.5% without.
    visual_pos_embed: bool = False
    # FiLM of the visual tokens by the pooled goal (BabyAI's conditioning): each token is scaled and shifted by
    # the goal before fusion, so "is this cell the red ball?" is one layer's work instead of two attention hops.
    # Zero-initialised (starts as the identity). Off in FLaRe's shapes.
    visual_goal_film: bool = False
    # cnn only: (mean, std) of pixel/255 to standardise the frames with (empty: pixel/255 as is), and Kaiming-normal
    # init with zero biases for the CNN and the compressor. With PyTorch's default init and raw [0, 1] MiniGrid
    # pixels 30-44% of those units are off on every frame and a token barely depends on the image; the fusion
    # readout then never learns which object is in front (results/policies/bc_architecture.md, grounding probe).
    cnn_pixel_norm: tuple[float, ...] = ()
    cnn_kaiming_init: bool = False
    # Spatial readout (BabyAI's FiLM-CNN keeps the grid to the end): each (FiLM-conditioned) visual token is
    # projected to this many channels, the grid is flattened in order and projected to d_model, and the result is
    # added to the fusion CLS output. 0: off (FLaRe's encoder). The fusion CLS alone, uniformly attending over
    # all tokens at init, does not learn "is the object in front the goal" from MiniLM goals (grounding probe).
    visual_flat_readout: int = 0
    text_dim: int = 512  # T5-small 512, MiniLM 384
    fusion_layers: int = 3
    fusion_heads: int = 8
    fusion_ff: int = 2048
    decoder_layers: int = 3
    decoder_heads: int = 8
    decoder_ff_multiple_of: int = 256
    dropout: float = 0.1
    norm_eps: float = 1e-5

    @property
    def decoder_ff(self) -> int:
        # LLaMA rule: 256 * ceil(int(2 * 4d / 3) / 256) -> 1536 for d = 512
        m = self.decoder_ff_multiple_of
        return m * math.ceil(int(2 * 4 * self.d_model / 3) / m)

    @property
    def tokens_per_camera(self) -> int:
        return self.visual_grid[0] * self.visual_grid[1]

    def validate(self) -> "PolicyConfig":
        if self.vision not in ("dinov2", "cnn"):
            raise ValueError(f"vision must be 'dinov2' or 'cnn', got {self.vision!r}")
        for name, heads in (("fusion", self.fusion_heads), ("decoder", self.decoder_heads)):
            if self.d_model % heads:
                raise ValueError(f"d_model {self.d_model} is not divisible by {name}_heads {heads}")
        if self.d_model % 2:
            raise ValueError("d_model must be even (sinusoidal step encoding)")
        if not self.cameras:
            raise ValueError("at least one camera is required")
        if self.n_actions < 1:
            raise ValueError("n_actions must be >= 1")
        if self.cnn_pixel_norm and (len(self.cnn_pixel_norm) != 2 or not self.cnn_pixel_norm[1] > 0):
            raise ValueError(f"cnn_pixel_norm must be (mean, std) with std > 0, got {self.cnn_pixel_norm}")
        if self.visual_flat_readout < 0:
            raise ValueError(f"visual_flat_readout must be >= 0, got {self.visual_flat_readout}")
        if self.vision == "cnn":
            h, w = self.image_size
            if h % self.cnn_patch or w % self.cnn_patch:
                raise ValueError(f"image_size {self.image_size} must be a multiple of cnn_patch {self.cnn_patch}")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "PolicyConfig":
        known = {f.name: f for f in fields(cls)}
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kwargs).validate()


def flare_small3(**overrides) -> PolicyConfig:
    """FLaRe's released shapes: DINOv2-S features, T5-small text, 3+3 layers of d 512 (20,958,741 params)."""
    return PolicyConfig(**overrides).validate()


def tiny(**overrides) -> PolicyConfig:
    """CPU-sized policy for the embedded simulator: CNN over a 56x56 egocentric frame, MiniLM text."""
    base = dict(
        n_actions=8, d_model=128, cameras=("raw_navigation_camera",), vision="cnn", visual_dim=64,
        visual_grid=(7, 7), image_size=(56, 56), cnn_patch=8, text_dim=384, fusion_layers=2, fusion_heads=4,
        fusion_ff=256, decoder_layers=2, decoder_heads=4, decoder_ff_multiple_of=64, dropout=0.0,
        visual_goal_film=True,
    )
    base.update(overrides)
    return PolicyConfig(**base).validate()


PRESETS = {"flare_small3": flare_small3, "tiny": tiny}
