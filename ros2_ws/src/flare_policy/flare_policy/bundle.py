"""Policy bundles: a directory that describes itself.

    <bundle>/policy.json          schema version, model config, embodiment, ordered actions, cameras and their
                                  preprocessing, text and vision encoders, provenance
    <bundle>/model.safetensors    the policy copy (encoder, decoder, actor head, its own critic head)
    <bundle>/critic.safetensors   optional: FLaRe's separate critic copy (used to warm-start PPO)

Nothing is ever unpickled: weights are safetensors, metadata is JSON.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .embodiments import Embodiment, get_embodiment

if TYPE_CHECKING:  # torch stays unimported until a bundle is loaded
    from .model import PolicyConfig, PolicyNet

SCHEMA_VERSION = 1
FORMAT = "flare-policy-bundle"
TEXT_ENCODERS = {"minilm": 384, "t5": 512}  # kind -> hidden size
VISION_ENCODERS = ("dinov2", "cnn")


class BundleError(ValueError):
    """A bundle that cannot be used, with the reason."""


@dataclass
class CameraSpec:
    """How a raw camera frame becomes the policy's input: center-crop to the aspect of `resize`, resize to
    `resize` (H, W), then center-crop to `crop` (H, W). FLaRe: 16:9 -> 224x396 -> 224x384.

    `stretch_crop` (H, W), optional: finally take the centre H x W window of that and resize it back to `crop`.
    FLaRe's policies saw every frame so: the RandomResizedCrop((224, 384), scale=(s, s)) of FLaRe's augmentation
    (utils/transformation_util.py, on in its RL and eval configs) never fits a crop on a 224x384 frame and
    falls back to torchvision's centre crop of 224x299, resized back to 384 wide."""
    name: str
    resize: tuple[int, int]
    crop: tuple[int, int]
    stretch_crop: tuple[int, int] | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.crop[0], self.crop[1], 3)

    def to_dict(self) -> dict:
        d = {"name": self.name, "resize": list(self.resize), "crop": list(self.crop)}
        if self.stretch_crop is not None:
            d["stretch_crop"] = list(self.stretch_crop)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CameraSpec":
        try:
            sc = d.get("stretch_crop")
            spec = cls(str(d["name"]), tuple(int(x) for x in d["resize"]), tuple(int(x) for x in d["crop"]),
                       None if sc is None else tuple(int(x) for x in sc))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BundleError(f"policy.json: bad camera entry {d!r} ({e})") from None
        if spec.stretch_crop is not None and (len(spec.stretch_crop) != 2 or min(spec.stretch_crop) <= 0 or
                                              spec.stretch_crop[0] > spec.crop[0] or
                                              spec.stretch_crop[1] > spec.crop[1]):
            raise BundleError(f"policy.json: camera {spec.name!r}: stretch_crop {spec.stretch_crop} must be two "
                              f"positive sizes within crop {spec.crop}")
        if len(spec.resize) != 2 or len(spec.crop) != 2 or min(spec.resize + spec.crop) <= 0:
            raise BundleError(f"policy.json: camera {spec.name!r}: resize/crop must be two positive sizes")
        if spec.crop[0] > spec.resize[0] or spec.crop[1] > spec.resize[1]:
            raise BundleError(f"policy.json: camera {spec.name!r}: crop {spec.crop} larger than resize {spec.resize}")
        return spec


# torchvision RandomResizedCrop.get_params on a 224x384 frame with scale >= 0.9 and ratio (3/4, 4/3): no
# attempt fits (it needs h = sqrt(0.9 * 224 * 384 * 3/4) >= 241 > 224 rows), so the fallback crop is
# h = 224, w = round(224 * 4/3) = 299 at column (384 - 299) // 2 = 42
FLARE_AUGMENT_CROP = (224, 299)


def flare_camera(name: str, augment_crop: bool = True) -> CameraSpec:
    return CameraSpec(name, resize=(224, 396), crop=(224, 384),
                      stretch_crop=FLARE_AUGMENT_CROP if augment_crop else None)


def sim_camera(name: str = "raw_navigation_camera", size: int = 56) -> CameraSpec:
    return CameraSpec(name, resize=(size, size), crop=(size, size))


@dataclass
class Bundle:
    path: Path
    config: PolicyConfig
    embodiment: Embodiment
    actions: tuple[str, ...]
    cameras: list[CameraSpec]
    text_encoder: dict
    vision_encoder: dict
    provenance: dict
    model: PolicyNet  # eval mode
    critic: PolicyNet | None = None
    meta: dict = field(default_factory=dict)

    def action_mask(self):
        import torch
        return torch.tensor(self.embodiment.action_mask(), dtype=torch.bool)


def _atomic_dir_write(out: Path, write) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_bundle(out_dir, model, *, embodiment: str, cameras: list[CameraSpec], text_encoder: dict,
                vision_encoder: dict | None = None, provenance: dict | None = None, critic=None,
                inference: dict | None = None) -> Path:
    """Write a bundle atomically (a crash never leaves a half-written bundle at `out_dir`)."""
    from safetensors.torch import save_file

    emb = get_embodiment(embodiment)
    cfg = model.cfg
    if cfg.n_actions != len(emb.actions):
        raise BundleError(f"model has {cfg.n_actions} actions, embodiment {emb.name!r} has {len(emb.actions)}")
    vision_encoder = vision_encoder or {"kind": cfg.vision}
    meta = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "model": cfg.to_dict(),
        "embodiment": emb.name,
        "actions": list(emb.actions),
        "cameras": [c.to_dict() for c in cameras],
        "text_encoder": text_encoder,
        "vision_encoder": vision_encoder,
        "has_critic": critic is not None,
        "trainable_parameters": model.n_trainable(),
        "provenance": provenance or {},
    }
    if inference:  # how the policy is meant to be run: {"action_selection": greedy|sample, "kv_window": steps}
        meta["inference"] = dict(inference)
    _check_meta(meta)

    def write(tmp: Path):
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                  str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if critic is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in critic.state_dict().items()},
                      str(tmp / "critic.safetensors"), metadata={"format": "pt"})
        (tmp / "policy.json").write_text(json.dumps(meta, indent=2) + "\n")

    _atomic_dir_write(Path(out_dir), write)
    return Path(out_dir)


def _check_meta(meta: dict):
    from .model.config import PolicyConfig

    if meta.get("format") != FORMAT:
        raise BundleError(f"policy.json: 'format' is {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(f"policy.json: schema_version {meta.get('schema_version')!r} is not supported "
                          f"(this flare_policy reads version {SCHEMA_VERSION})")
    for key in ("model", "embodiment", "actions", "cameras", "text_encoder", "vision_encoder"):
        if key not in meta:
            raise BundleError(f"policy.json: missing key {key!r}")
    try:
        cfg = PolicyConfig.from_dict(meta["model"])
    except (TypeError, ValueError) as e:
        raise BundleError(f"policy.json: invalid model config: {e}") from None
    try:
        emb = get_embodiment(meta["embodiment"])
    except ValueError as e:
        raise BundleError(f"policy.json: {e}") from None
    if list(meta["actions"]) != list(emb.actions):
        raise BundleError(f"policy.json: actions {meta['actions']} do not match embodiment {emb.name!r} "
                          f"({list(emb.actions)})")
    if cfg.n_actions != len(emb.actions):
        raise BundleError(f"policy.json: model.n_actions {cfg.n_actions} != {len(emb.actions)} actions")
    cams = [CameraSpec.from_dict(c) for c in meta["cameras"]]
    if [c.name for c in cams] != list(cfg.cameras):
        raise BundleError(f"policy.json: cameras {[c.name for c in cams]} do not match model cameras {list(cfg.cameras)}")
    unknown_cams = {c.name for c in cams} - set(emb.cameras)
    if unknown_cams:
        raise BundleError(f"policy.json: cameras {sorted(unknown_cams)} are not cameras of embodiment {emb.name!r} "
                          f"({list(emb.cameras)})")
    if cfg.vision == "cnn" and any(tuple(c.crop) != tuple(cfg.image_size) for c in cams):
        raise BundleError(f"policy.json: camera crop must equal model image_size {cfg.image_size}")
    te = meta["text_encoder"]
    if not isinstance(te, dict) or te.get("kind") not in TEXT_ENCODERS:
        raise BundleError(f"policy.json: text_encoder.kind must be one of {sorted(TEXT_ENCODERS)}, got {te!r}")
    if TEXT_ENCODERS[te["kind"]] != cfg.text_dim:
        raise BundleError(f"policy.json: text encoder {te['kind']!r} gives {TEXT_ENCODERS[te['kind']]}-d tokens "
                          f"but model.text_dim is {cfg.text_dim}")
    ve = meta["vision_encoder"]
    if not isinstance(ve, dict) or ve.get("kind") != cfg.vision:
        raise BundleError(f"policy.json: vision_encoder.kind {ve!r} does not match model.vision {cfg.vision!r}")
    return cfg, emb, cams


def read_meta(path) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: not a bundle directory (expected policy.json + model.safetensors)")
    meta_file = path / "policy.json"
    if not meta_file.is_file():
        raise BundleError(f"{path}: missing policy.json")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{meta_file}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{meta_file}: expected a JSON object")
    return meta


def _load_weights(module, file: Path) -> None:
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not file.is_file():
        raise BundleError(f"{file.parent}: missing {file.name}")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise BundleError(f"{file}: not a readable safetensors file ({e})") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise BundleError(f"{file}: weights do not match the model config: "
                          f"missing {missing[:8]}{'...' if len(missing) > 8 else ''} "
                          f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise BundleError(f"{file}: shape mismatch for {k}: file {tuple(v.shape)}, "
                              f"model {tuple(expected[k].shape)}")
        if v.dtype != torch.float32:
            raise BundleError(f"{file}: {k} has dtype {v.dtype}, expected float32")
        if not torch.isfinite(v).all():
            raise BundleError(f"{file}: {k} contains NaN or inf")
    module.load_state_dict(tensors, strict=True)


def load_bundle(path, device: str = "cpu", with_critic: bool = False) -> Bundle:
    """Load and validate a bundle; raises BundleError naming the problem."""
    from .model import PolicyNet

    path = Path(path)
    meta = read_meta(path)
    cfg, emb, cams = _check_meta(meta)
    model = PolicyNet(cfg)
    _load_weights(model, path / "model.safetensors")
    critic = None
    if with_critic and (path / "critic.safetensors").is_file():
        critic = PolicyNet(cfg)
        _load_weights(critic, path / "critic.safetensors")
    model.eval().to(device)
    if critic is not None:
        critic.eval().to(device)
    return Bundle(path, cfg, emb, tuple(meta["actions"]), cams, meta["text_encoder"], meta["vision_encoder"],
                  meta.get("provenance", {}), model, critic, meta)
