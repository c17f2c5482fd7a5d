"""Import the released FLaRe checkpoints into policy bundles (flare_checkpoint_spec.md sections 1-4, 7).

    RL  `FLaRe_<task>_*.pt`     allenact dict; `model_state_dict` = 278 entries: the actor copy (139) and the
                                separate critic copy (`critic_tsfm.`, 139), each with its own T5-small (52)
    IL  `FLaRe_IL_50000.ckpt`   Lightning dict; `state_dict` with a `model.` prefix, a bare `actor` Linear and a
                                copy of DINOv2 (dropped); no value head

What is written (stretch embodiment, 20 actions in FLaRe order):
    model.safetensors   the actor copy with `in_proj` split into q/k/v. Its own `critic.fc` never received a
                        gradient (random init, spec 2.4), so it is replaced by the critic copy's trained head:
                        a starting point for a shared critic, not FLaRe's value (that needs the critic copy).
    critic.safetensors  RL only: the critic copy with its trained `critic.fc`; its `actor.linear` (stale IL
                        weights, never trained in RL) is zeroed so it cannot be mistaken for a policy.
T5 is not stored: the bundle names a T5-small directory and records a fingerprint of the checkpoint's T5;
`--t5 DIR` checks that directory's weights equal the checkpoint's. DINOv2 is never in the RL file; with
`--dinov2 DIR` its weights' fingerprint is recorded too, and policy_node refuses other directories.
policy.json also says how FLaRe ran the policy: `inference` = sampled actions, 128 steps of context, and each
camera's `stretch_crop` (FLaRe's augmentation always centre-cropped 224x299 and stretched it back to 384).

Files are read with `torch.load(weights_only=True)`: a file that needs arbitrary unpickling is refused,
never executed.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .bundle import flare_camera, save_bundle
from .model import PolicyNet, flare_small3
from .model.config import PolicyConfig

CONVERTER_VERSION = "2"  # 2: inference block, stretch_crop, DINOv2 weights_sha256
FLARE_TRAIN_CONTEXT = 128  # steps of context FLaRe trained with
CRITIC = "critic_tsfm."
T5_PREFIX = "visual_encoder.text_encoder."
IL_PREFIX = "model."
IL_DINO_PREFIX = "model.visual_encoder.image_encoder."
IN_PROJ = re.compile(r"^(visual_encoder\.fusion_xformer\.layers\.\d+\.self_attn\.)in_proj_(weight|bias)$")


class ConvertError(ValueError):
    """A file that is not a usable FLaRe checkpoint, with what is wrong with it."""


@dataclass(frozen=True)
class T5Shape:
    """Shapes of the T5 encoder stored inside each copy (defaults: t5-small)."""
    vocab: int = 32128
    d_model: int = 512
    d_kv: int = 64
    heads: int = 8
    d_ff: int = 2048
    layers: int = 6
    buckets: int = 32

    @classmethod
    def from_config(cls, c) -> "T5Shape":
        return cls(c.vocab_size, c.d_model, c.d_kv, c.num_heads, c.d_ff, c.num_layers, c.relative_attention_num_buckets)


def t5_shapes(t5: T5Shape) -> dict[str, tuple]:
    """T5EncoderModel state-dict names and shapes, in order (spec 2.2)."""
    inner = t5.heads * t5.d_kv
    out = {"shared.weight": (t5.vocab, t5.d_model), "encoder.embed_tokens.weight": (t5.vocab, t5.d_model)}
    for b in range(t5.layers):
        p = f"encoder.block.{b}.layer."
        for w in "qkv":
            out[f"{p}0.SelfAttention.{w}.weight"] = (inner, t5.d_model)
        out[f"{p}0.SelfAttention.o.weight"] = (t5.d_model, inner)
        if b == 0:
            out[f"{p}0.SelfAttention.relative_attention_bias.weight"] = (t5.buckets, t5.heads)
        out[f"{p}0.layer_norm.weight"] = (t5.d_model,)
        out[f"{p}1.DenseReluDense.wi.weight"] = (t5.d_ff, t5.d_model)
        out[f"{p}1.DenseReluDense.wo.weight"] = (t5.d_model, t5.d_ff)
        out[f"{p}1.layer_norm.weight"] = (t5.d_model,)
    out["encoder.final_layer_norm.weight"] = (t5.d_model,)
    return out


def flare_copy_shapes(cfg: PolicyConfig, t5: T5Shape) -> dict[str, tuple]:
    """One `DinoLLAMATxNavActorCritic` state dict as FLaRe saves it (spec 2.1-2.3), in state-dict order."""
    d, ff, hid, n = cfg.d_model, cfg.fusion_ff, cfg.decoder_ff, cfg.n_actions
    ve = "visual_encoder."
    out = {ve + "fusion_token": (d,)}
    out.update({f"{ve}visual_sensor_token_{cam}": (d,) for cam in cfg.cameras})
    out.update({T5_PREFIX + k: s for k, s in t5_shapes(t5).items()})
    out.update({ve + "text_adapter.0.weight": (d, cfg.text_dim), ve + "text_adapter.0.bias": (d,),
                ve + "text_adapter.1.weight": (d,), ve + "text_adapter.1.bias": (d,),
                ve + "visual_compressor.0.weight": (d, cfg.visual_dim, 1, 1), ve + "visual_compressor.0.bias": (d,),
                ve + "visual_compressor.2.weight": (d, d, 1, 1), ve + "visual_compressor.2.bias": (d,),
                ve + "visual_adapter.0.weight": (d, d), ve + "visual_adapter.0.bias": (d,),
                ve + "visual_adapter.1.weight": (d,), ve + "visual_adapter.1.bias": (d,)})
    for L in range(cfg.fusion_layers):
        p = f"{ve}fusion_xformer.layers.{L}."
        out.update({p + "self_attn.in_proj_weight": (3 * d, d), p + "self_attn.in_proj_bias": (3 * d,),
                    p + "self_attn.out_proj.weight": (d, d), p + "self_attn.out_proj.bias": (d,),
                    p + "linear1.weight": (ff, d), p + "linear1.bias": (ff,),
                    p + "linear2.weight": (d, ff), p + "linear2.bias": (d,),
                    p + "norm1.weight": (d,), p + "norm1.bias": (d,), p + "norm2.weight": (d,), p + "norm2.bias": (d,)})
    out.update({"object_in_hand_embed.weight": (3, d), "last_actions_embed.weight": (n + 2, d),
                "time_encoder.div_term": (d // 2,)})
    for L in range(cfg.decoder_layers):
        p = f"decoder.layers.{L}."
        out.update({p + f"attention.w{w}.weight": (d, d) for w in "qkvo"})
        out.update({p + "feed_forward.w1.weight": (hid, d), p + "feed_forward.w2.weight": (d, hid),
                    p + "feed_forward.w3.weight": (hid, d), p + "attention_norm.weight": (d,),
                    p + "ffn_norm.weight": (d,)})
    out.update({"decoder.norm.weight": (d,), "decoder.output.weight": (d, d),
                "actor.linear.weight": (n, d), "actor.linear.bias": (n,),
                "critic.fc.weight": (1, d), "critic.fc.bias": (1,)})
    return out


def rl_shapes(cfg: PolicyConfig, t5: T5Shape) -> dict[str, tuple]:
    one = flare_copy_shapes(cfg, t5)
    return {**one, **{CRITIC + k: s for k, s in one.items()}}


def il_shapes(cfg: PolicyConfig, t5: T5Shape) -> dict[str, tuple]:
    """IL Lightning keys (DINO copy excluded), before the `model.` prefix and the actor rename."""
    one = flare_copy_shapes(cfg, t5)
    out = {k: s for k, s in one.items() if not k.startswith(("critic.", "actor."))}
    out.update({"actor.weight": one["actor.linear.weight"], "actor.bias": one["actor.linear.bias"]})
    return out


# ----------------------------------------------------------------------------------------------------------
# reading and checking


def load_checkpoint(path) -> object:
    """torch.load with weights_only=True; everything that goes wrong becomes a ConvertError."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\.\s|\n|$)", str(e))
        why = m.group(1).strip() if m else str(e).splitlines()[0]
        raise ConvertError(f"{path}: refused: the file holds a pickled object that is not plain tensors/containers "
                           f"({why}); it was not loaded and nothing in it was executed") from None
    except Exception as e:  # noqa: BLE001 - the weights-only unpickler raises many kinds on malformed input
        raise ConvertError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None


def _few(keys, n: int = 5) -> str:
    keys = list(keys)
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n})" if len(keys) > n else "")


def check_tensor_dict(sd, where: str) -> None:
    if not isinstance(sd, dict):
        raise ConvertError(f"{where}: expected a dict of tensors, got {type(sd).__name__}")
    bad_type = [str(k) for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad_type:
        raise ConvertError(f"{where}: {len(bad_type)} entries are not name -> tensor: {_few(bad_type)}")
    ddp = [k for k in sd if k.startswith("module.") or ".module." in k]
    if ddp:
        raise ConvertError(f"{where}: {len(ddp)} keys carry a 'module.' prefix (a DDP/DataParallel wrapper was "
                           f"saved), e.g. {ddp[0]}; FLaRe checkpoints have none. Strip 'module.' from every key first")


def check_state(sd: dict, expected: dict[str, tuple], where: str) -> None:
    """Exact key set, shapes, float32, finite values; names every problem found."""
    check_tensor_dict(sd, where)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        parts = [f"{where}: {len(sd)} entries, expected {len(expected)}"]
        if missing:
            parts.append(f"{len(missing)} missing: {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_few(unexpected)}")
        raise ConvertError("; ".join(parts))
    shapes = [f"{k}: file {tuple(sd[k].shape)}, expected {expected[k]}" for k in expected
              if tuple(sd[k].shape) != tuple(expected[k])]
    if shapes:
        raise ConvertError(f"{where}: {len(shapes)} shape mismatches: " + "; ".join(shapes[:5])
                           + (" ..." if len(shapes) > 5 else ""))
    dtypes = [f"{k} ({sd[k].dtype})" for k in expected if sd[k].dtype != torch.float32]
    if dtypes:
        raise ConvertError(f"{where}: {len(dtypes)} tensors are not float32: {_few(dtypes)}")
    nonfinite = [k for k in expected if not torch.isfinite(sd[k]).all()]
    if nonfinite:
        raise ConvertError(f"{where}: {len(nonfinite)} tensors contain NaN/inf: {_few(nonfinite)}")


def check_copy(sd: dict, prefix: str, cfg: PolicyConfig, where: str) -> None:
    """Checklist 2-3 for one copy: the deterministic time-encoder buffer and the tied T5 embedding."""
    div = sd[prefix + "time_encoder.div_term"]
    ref = torch.exp(torch.arange(0, cfg.d_model, 2).float() * (-math.log(10000.0) / cfg.d_model))
    if not torch.allclose(div, ref, rtol=1e-5, atol=1e-7):
        raise ConvertError(f"{where}: {prefix}time_encoder.div_term differs from exp(-2i ln(1e4)/d) "
                           f"(max abs diff {(div - ref).abs().max():.3g}): not a FLaRe time encoder")
    a, b = sd[prefix + T5_PREFIX + "shared.weight"], sd[prefix + T5_PREFIX + "encoder.embed_tokens.weight"]
    if not torch.equal(a, b):
        raise ConvertError(f"{where}: {prefix}{T5_PREFIX}shared.weight != encoder.embed_tokens.weight "
                           f"(T5's input embedding is tied; max abs diff {(a - b).abs().max():.3g})")


def t5_state(sd: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    p = prefix + T5_PREFIX
    return {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}


def tensor_fingerprint(t5: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors (name, shape, float32 bytes), in name order: identifies the weights (T5,
    DINOv2); the node recomputes it from the directory it loads."""
    h = hashlib.sha256()
    for k in sorted(t5):
        v = t5[k].detach().float().contiguous().cpu()
        h.update(f"{k}:{tuple(v.shape)};".encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


t5_fingerprint = tensor_fingerprint


def compare_t5(ckpt_t5: dict[str, torch.Tensor], t5_dir, atol: float = 1e-6) -> None:
    """Raise if the T5 encoder in `t5_dir` is not the one stored in the checkpoint."""
    from transformers import AutoTokenizer, T5EncoderModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        model = T5EncoderModel.from_pretrained(str(t5_dir), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConvertError(f"--t5 {t5_dir}: cannot load a T5 encoder ({e})") from None
    try:  # the runner needs the tokenizer from the same directory
        AutoTokenizer.from_pretrained(str(t5_dir), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConvertError(f"--t5 {t5_dir}: no usable tokenizer in the directory ({e})") from None
    ref = model.state_dict()
    missing, extra = sorted(set(ckpt_t5) - set(ref)), sorted(set(ref) - set(ckpt_t5))
    if missing or extra:
        raise ConvertError(f"--t5 {t5_dir}: parameter names differ from the checkpoint's T5: "
                           f"not in the directory: {_few(missing)}; not in the checkpoint: {_few(extra)}")
    diffs = []
    for k, v in ckpt_t5.items():
        if tuple(ref[k].shape) != tuple(v.shape):
            diffs.append(f"{k}: shape {tuple(ref[k].shape)} vs checkpoint {tuple(v.shape)}")
        else:
            err = (ref[k].float() - v).abs().max().item()
            if err > atol:
                diffs.append(f"{k}: max abs diff {err:.3g}")
    if diffs:
        raise ConvertError(f"--t5 {t5_dir}: {len(diffs)} of {len(ckpt_t5)} T5 tensors differ from the checkpoint's "
                           f"T5 (the policy was trained on the checkpoint's): " + "; ".join(diffs[:5]))


def check_dinov2_dir(path, visual_dim: int) -> str:
    """Raise unless `path` holds a DINOv2 of the policy's width; return its weights fingerprint."""
    from .vision import Dinov2Features, VisionError

    try:
        v = Dinov2Features(path)
    except VisionError as e:
        raise ConvertError(f"--dinov2: {e}") from None
    if v.dim != visual_dim:
        raise ConvertError(f"--dinov2 {path}: hidden size {v.dim}, the policy expects {visual_dim} (ViT-S/14)")
    return v.weights_sha256


# ----------------------------------------------------------------------------------------------------------
# mapping to flare_policy.model names


def to_policy_state(copy: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """FLaRe copy (no prefix) -> PolicyNet state dict: drop T5, split the packed fusion in_proj into q/k/v."""
    out = {}
    for k, v in copy.items():
        if k.startswith(T5_PREFIX):
            continue
        m = IN_PROJ.match(k)
        if m:  # rows [0:d] = q, [d:2d] = k, [2d:3d] = v (nn.MultiheadAttention's packing)
            for name, part in zip(("q_proj", "k_proj", "v_proj"), v.chunk(3, dim=0)):
                out[f"{m.group(1)}{name}.{m.group(2)}"] = part.clone()
        else:
            out[k] = v
    return out


def _policy_net(cfg: PolicyConfig, state: dict) -> PolicyNet:
    net = PolicyNet(cfg)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:  # the spec tables and PolicyNet disagree: a bug here, not in the file
        raise ConvertError(f"internal: converted weights do not fit PolicyNet: {e}") from None
    return net.eval()


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _task(name: str) -> str | None:
    m = re.match(r"FLaRe_(.+?)(?:_sparse_reward)?_\d+\.(?:pt|ckpt)$", name)
    return m.group(1) if m else None


def convert_checkpoint(src, out_dir, t5_dir=None, dinov2_dir=None, cfg: PolicyConfig | None = None,
                       t5: T5Shape | None = None) -> Path:
    """FLaRe RL `.pt` or IL `.ckpt` -> bundle at out_dir. `cfg`/`t5` default to the released shapes
    (flare_small3, t5-small); other values exist for small synthetic tests."""
    cfg, t5 = cfg or flare_small3(), t5 or T5Shape()
    src = Path(src)
    obj = load_checkpoint(src)
    if not isinstance(obj, dict):
        raise ConvertError(f"{src}: expected a dict (allenact checkpoint with 'model_state_dict', or Lightning "
                           f"checkpoint with 'state_dict'), got {type(obj).__name__}")
    prov = {"source": src.name, "sha256": sha256_file(src), "task": _task(src.name),
            "converter": "flare_policy.convert", "converter_version": CONVERTER_VERSION}
    if "model_state_dict" in obj:
        sd = obj["model_state_dict"]
        where = f"{src}: model_state_dict"
        check_state(sd, rl_shapes(cfg, t5), where)
        for prefix in ("", CRITIC):
            check_copy(sd, prefix, cfg, where)
        actor_t5, critic_t5 = t5_state(sd), t5_state(sd, CRITIC)
        if any(not torch.equal(actor_t5[k], critic_t5[k]) for k in actor_t5):
            raise ConvertError(f"{where}: the actor and critic copies hold different T5 weights (both should be "
                               f"the frozen t5-small)")
        actor = {k: v for k, v in sd.items() if not k.startswith(CRITIC)}
        critic = {k[len(CRITIC):]: v for k, v in sd.items() if k.startswith(CRITIC)}
        # heads that never received a gradient (spec 2.4): see the module docstring
        actor["critic.fc.weight"], actor["critic.fc.bias"] = critic["critic.fc.weight"], critic["critic.fc.bias"]
        critic["actor.linear.weight"] = torch.zeros_like(critic["actor.linear.weight"])
        critic["actor.linear.bias"] = torch.zeros_like(critic["actor.linear.bias"])
        steps = obj.get("total_steps")
        prov.update(format="allenact-rl", total_steps=int(steps) if isinstance(steps, int) else None,
                    heads="model.safetensors: actor copy, critic.fc taken from the critic copy; critic.safetensors: "
                          "critic copy (FLaRe's value), actor.linear zeroed (never trained in RL)")
    elif "state_dict" in obj:
        raw = obj["state_dict"]
        where = f"{src}: state_dict"
        check_tensor_dict(raw, where)
        unprefixed = [k for k in raw if not k.startswith(IL_PREFIX)]
        if unprefixed:
            raise ConvertError(f"{where}: {len(unprefixed)} keys lack the Lightning 'model.' prefix: "
                               f"{_few(unprefixed)}")
        sd = {k[len(IL_PREFIX):]: v for k, v in raw.items() if not k.startswith(IL_DINO_PREFIX)}
        check_state(sd, il_shapes(cfg, t5), f"{where} (after removing 'model.' and the DINOv2 copy)")
        check_copy(sd, "", cfg, where)
        actor_t5 = t5_state(sd)
        actor = {("actor.linear." + k[len("actor."):] if k.startswith("actor.") else k): v for k, v in sd.items()}
        torch.manual_seed(0)  # the value head is absent in IL: fresh init (orthogonal gain 1, zero bias) as FLaRe
        fresh = PolicyNet(cfg).critic.state_dict()
        actor.update({"critic." + k: v for k, v in fresh.items()})
        critic = None
        steps = obj.get("train_steps", obj.get("global_step"))
        prov.update(format="lightning-il", total_steps=int(steps) if isinstance(steps, int) else None,
                    heads="model.safetensors: IL actor; critic.fc freshly initialised (orthogonal, seed 0)")
    else:
        keys = [str(k) for k in obj]
        raise ConvertError(f"{src}: no 'model_state_dict' (allenact RL checkpoint) or 'state_dict' (Lightning IL "
                           f"checkpoint); top-level keys: {_few(keys, 8)}")

    prov["t5_sha256"] = t5_fingerprint(actor_t5)
    if t5_dir is not None:
        compare_t5(actor_t5, t5_dir)
    dinov2_sha = check_dinov2_dir(dinov2_dir, cfg.visual_dim) if dinov2_dir is not None else None
    model = _policy_net(cfg, to_policy_state(actor))
    critic_net = _policy_net(cfg, to_policy_state(critic)) if critic is not None else None
    text = {"kind": "t5", "path": str(Path(t5_dir).resolve()) if t5_dir else None, "model": "t5-small",
            "weights_sha256": prov["t5_sha256"]}
    vision = {"kind": "dinov2", "path": str(Path(dinov2_dir).resolve()) if dinov2_dir else None,
              "model": "dinov2_vits14"}
    if dinov2_sha is not None:
        vision["weights_sha256"] = dinov2_sha
    # FLaRe evaluates by sampling and trained on at most 128 steps of context (flare_method.md)
    inference = {"action_selection": "sample", "kv_window": FLARE_TRAIN_CONTEXT}
    return save_bundle(out_dir, model, embodiment="stretch", cameras=[flare_camera(c) for c in cfg.cameras],
                       text_encoder=text, vision_encoder=vision, provenance=prov, critic=critic_net,
                       inference=inference)


# ----------------------------------------------------------------------------------------------------------
# test and benchmark helpers: random local T5 encoders (no hub access anywhere)

T5_TEST_WORDS = ("go to find pick up the a an red blue green ball door chair mug apple bed sofa kitchen room "
                 "bedroom bathroom living open close grab fetch bring visit all rooms object toilet plant").split()


def random_t5(out_dir, shape: T5Shape | None = None, seed: int = 0):
    """Write a random-weight T5 encoder (t5-small shapes by default) plus a small word-level T5 tokenizer."""
    from transformers import T5Config, T5EncoderModel, T5Tokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    s = shape or T5Shape()
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=s.vocab, d_model=s.d_model, d_kv=s.d_kv, num_heads=s.heads, d_ff=s.d_ff,
                   num_layers=s.layers, relative_attention_num_buckets=s.buckets, feed_forward_proj="relu",
                   layer_norm_epsilon=1e-6, dropout_rate=0.1)
    model = T5EncoderModel(cfg).eval()
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in T5_TEST_WORDS]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    out = Path(out_dir)
    model.save_pretrained(str(out))
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(str(out))
    return model
