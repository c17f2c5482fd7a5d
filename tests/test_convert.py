"""FLaRe checkpoint import on synthetic checkpoints built from flare_checkpoint_spec.md (exact names and shapes)."""
import hashlib
import math
import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from flare_policy.bundle import load_bundle
from flare_policy.cli import main
from flare_policy.convert import (CRITIC, T5_PREFIX, ConvertError, T5Shape, convert_checkpoint, flare_copy_shapes,
                                  random_t5, rl_shapes, t5_shapes)
from flare_policy.embodiments import STRETCH_ACTIONS
from flare_policy.model import PolicyConfig, PolicyInput, flare_small3
from flare_policy.runner import PolicyRunner
from flare_policy.text import TextEncoder
from flare_policy.vision import Dinov2Features, random_dinov2

torch.set_num_threads(1)
RL_NAME = "FLaRe_objectnav_sparse_reward_000021026752.pt"
SMALL = PolicyConfig(d_model=32, visual_dim=16, text_dim=512, fusion_layers=1, fusion_heads=2, fusion_ff=64,
                     decoder_layers=1, decoder_heads=2, decoder_ff_multiple_of=16)
SMALL_T5 = T5Shape(vocab=96, d_model=512, d_kv=8, heads=2, d_ff=32, layers=1, buckets=4)


def div_term(d):
    return torch.exp(torch.arange(0, d, 2).float() * (-math.log(10000.0) / d))


def synthetic_copy(cfg, t5_sd, t5, g):
    """One FLaRe copy with random tensors of the spec's names and shapes; T5 entries taken from a real
    (random-weight) T5EncoderModel state dict, so the embedding stays tied."""
    sd = {}
    for k, s in flare_copy_shapes(cfg, t5).items():
        if k.startswith(T5_PREFIX):
            sd[k] = t5_sd[k[len(T5_PREFIX):]]
        elif k.endswith("div_term"):
            sd[k] = div_term(cfg.d_model)
        elif len(s) == 1:
            sd[k] = (1.0 if "norm" in k or k.endswith(".1.weight") else 0.0) + 0.1 * torch.randn(s, generator=g)
        else:
            sd[k] = torch.randn(s, generator=g) / math.sqrt(math.prod(s[1:]))
    return sd


def synthetic_rl(cfg, t5_sd, t5=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    actor, critic = synthetic_copy(cfg, t5_sd, t5 or T5Shape(), g), synthetic_copy(cfg, t5_sd, t5 or T5Shape(), g)
    return {"model_state_dict": {**actor, **{CRITIC + k: v for k, v in critic.items()}}, "total_steps": 21026752,
            "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 2e-5, "betas": (0.9, 0.999), "eps": 1e-8,
                                                                    "weight_decay": 0, "params": list(range(274))}]},
            "training_pipeline_state_dict": {"stage_info_list": [{"rollout_count": 3}], "rollout_count": 3},
            "trainer_seed": None}


@pytest.fixture(scope="module")
def t5_small(tmp_path_factory):
    d = tmp_path_factory.mktemp("t5-small")
    return d, random_t5(d).state_dict()  # t5-small shapes, random weights


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    return random_dinov2(tmp_path_factory.mktemp("dinov2"), num_hidden_layers=1)  # ViT-S/14 width, 1 block


@pytest.fixture(scope="module")
def rl(tmp_path_factory, t5_small, dino_dir):
    """A full-size synthetic RL checkpoint converted through the CLI."""
    d = tmp_path_factory.mktemp("rl")
    ckpt = synthetic_rl(flare_small3(), t5_small[1])
    torch.save(ckpt, d / RL_NAME)
    argv = ["convert", str(d / RL_NAME), str(d / "bundle"), "--t5", str(t5_small[0]), "--dinov2", str(dino_dir)]
    assert main(argv) == 0
    return d / RL_NAME, d / "bundle", ckpt["model_state_dict"]


@pytest.fixture(scope="module")
def small_t5(tmp_path_factory):
    d = tmp_path_factory.mktemp("t5-tiny")
    return d, random_t5(d, SMALL_T5).state_dict()


def test_spec_tables(t5_small):
    copy = flare_copy_shapes(flare_small3(), T5Shape())
    assert len(copy) == 139 and len([k for k in copy if not k.startswith(T5_PREFIX)]) == 87
    full = rl_shapes(flare_small3(), T5Shape())
    assert len(full) == 278 and sum(k.startswith(CRITIC) for k in full) == 139
    ref = {k: tuple(v.shape) for k, v in t5_small[1].items()}  # T5EncoderModel(t5-small config)
    assert t5_shapes(T5Shape()) == ref and list(t5_shapes(T5Shape())) == list(ref) and len(ref) == 52
    trainable = sum(math.prod(s) for k, s in copy.items() if not k.startswith(T5_PREFIX) and "div_term" not in k)
    assert trainable == 20_958_741
    assert list(copy)[:4] == ["visual_encoder.fusion_token", "visual_encoder.visual_sensor_token_raw_navigation_camera",
                              "visual_encoder.visual_sensor_token_raw_manipulation_camera",
                              "visual_encoder.text_encoder.shared.weight"]
    assert list(copy)[-2:] == ["critic.fc.weight", "critic.fc.bias"]


def test_rl_conversion(rl, t5_small, dino_dir):
    path, bundle_dir, sd = rl
    b = load_bundle(bundle_dir, with_critic=True)  # strict, validated load
    assert b.embodiment.name == "stretch" and b.actions == STRETCH_ACTIONS and b.config == flare_small3()
    assert [c.name for c in b.cameras] == ["raw_navigation_camera", "raw_manipulation_camera"]
    assert (b.cameras[0].resize, b.cameras[0].crop) == ((224, 396), (224, 384))
    assert b.text_encoder["kind"] == "t5" and b.text_encoder["path"] == str(t5_small[0].resolve())
    assert b.vision_encoder == {"kind": "dinov2", "path": str(pathlib.Path(dino_dir).resolve()),
                                "model": "dinov2_vits14", "weights_sha256": Dinov2Features(dino_dir).weights_sha256}
    # how FLaRe ran it: sampled actions, 128 steps of context, its augmentation's crop-and-stretch
    assert b.meta["inference"] == {"action_selection": "sample", "kv_window": 128}
    assert all(c.stretch_crop == (224, 299) for c in b.cameras)
    p = b.provenance
    assert p["source"] == RL_NAME and p["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (p["total_steps"], p["task"], p["format"]) == (21026752, "objectnav", "allenact-rl")
    assert p["converter_version"] == "2"
    model, critic = b.model.state_dict(), b.critic.state_dict()
    for L in range(3):  # in_proj split into thirds, in q, k, v order
        pre = f"visual_encoder.fusion_xformer.layers.{L}.self_attn."
        for kind in ("weight", "bias"):
            packed = sd[f"{pre}in_proj_{kind}"]
            for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
                assert torch.equal(model[f"{pre}{name}.{kind}"], packed[512 * i: 512 * (i + 1)])
                critic_packed = sd[f"{CRITIC}{pre}in_proj_{kind}"]
                assert torch.equal(critic[f"{pre}{name}.{kind}"], critic_packed[512 * i: 512 * (i + 1)])
    same = [k for k in model if "_proj." not in k or "out_proj" in k]
    heads = {"critic.fc.weight", "critic.fc.bias", "actor.linear.weight", "actor.linear.bias"}
    assert all(torch.equal(model[k], sd[k]) for k in same if k not in heads)
    assert all(torch.equal(critic[k], sd[CRITIC + k]) for k in same if k not in heads)
    assert torch.equal(model["actor.linear.weight"], sd["actor.linear.weight"])  # the trained policy head
    assert torch.equal(critic["critic.fc.weight"], sd[CRITIC + "critic.fc.weight"])  # the trained value head
    assert torch.equal(model["critic.fc.weight"], sd[CRITIC + "critic.fc.weight"])  # never-trained head replaced
    assert not critic["actor.linear.weight"].any()  # the critic copy's stale IL actor is dropped
    assert not any("text_encoder" in k for k in load_file(str(bundle_dir / "model.safetensors")))  # T5 not stored


def reference_logits(sd, feats, text, prev, in_hand, steps):
    """FLaRe's forward from the raw checkpoint tensors: torch's own TransformerEncoderLayer with the packed
    in_proj for the fusion encoder, the LLaMA decoder written out over the whole causal sequence."""
    d, ve = 512, "visual_encoder."
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(d, 8, 2048, dropout=0.1, batch_first=True), 3,
                                enable_nested_tensor=False).eval()
    pre = ve + "fusion_xformer."
    enc.load_state_dict({k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)})

    def adapter(x, name):
        return F.relu(F.layer_norm(F.linear(x, sd[name + ".0.weight"], sd[name + ".0.bias"]), (d,),
                                   sd[name + ".1.weight"], sd[name + ".1.bias"]))

    def cam_tokens(cam, f):  # f: (T, 384, 7, 12)
        x = F.relu(F.conv2d(f, sd[ve + "visual_compressor.0.weight"], sd[ve + "visual_compressor.0.bias"]))
        x = F.relu(F.conv2d(x, sd[ve + "visual_compressor.2.weight"], sd[ve + "visual_compressor.2.bias"]))
        return adapter(x.flatten(2).transpose(1, 2), ve + "visual_adapter") + sd[f"{ve}visual_sensor_token_{cam}"]

    T = len(steps)
    tokens = [sd[ve + "fusion_token"].expand(T, 1, d)]  # [CLS, nav, manipulation, text]
    tokens += [cam_tokens(c, feats[c]) for c in ("raw_navigation_camera", "raw_manipulation_camera")]
    tokens.append(adapter(text, ve + "text_adapter").expand(T, -1, -1))
    with torch.no_grad():
        obs = enc(torch.cat(tokens, 1))[:, 0]
    ang = torch.tensor(steps).float()[:, None] * sd["time_encoder.div_term"]
    pe = torch.stack([ang.sin(), ang.cos()], -1).flatten(1)  # PE[2i] = sin, PE[2i+1] = cos
    z = obs + sd["last_actions_embed.weight"][prev] + sd["object_in_hand_embed.weight"][in_hand] + pe

    def rms(x, w):
        return w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)

    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for L in range(3):
        p = f"decoder.layers.{L}."
        u = rms(z, sd[p + "attention_norm.weight"])
        q, k, v = (F.linear(u, sd[f"{p}attention.w{w}.weight"]).view(T, 8, 64).transpose(0, 1) for w in "qkv")
        att = (q @ k.transpose(1, 2) / 8).masked_fill(~causal, float("-inf")).softmax(-1)
        z = z + F.linear((att @ v).transpose(0, 1).reshape(T, d), sd[p + "attention.wo.weight"])
        n = rms(z, sd[p + "ffn_norm.weight"])
        w1, w2, w3 = (sd[f"{p}feed_forward.w{i}.weight"] for i in (1, 2, 3))
        z = z + F.linear(F.silu(F.linear(n, w1)) * F.linear(n, w3), w2)
    belief = F.linear(rms(z, sd["decoder.norm.weight"]), sd["decoder.output.weight"])
    return F.linear(belief, sd["actor.linear.weight"], sd["actor.linear.bias"])


def test_converted_logits_equal_packed_reference(rl):
    _, bundle_dir, sd = rl
    model = load_bundle(bundle_dir).model
    g = torch.Generator().manual_seed(3)
    T, prev, in_hand, steps = 5, [20, 3, 0, 8, 8], [0, 0, 1, 1, 0], [0, 1, 2, 3, 4]
    feats = {c: torch.randn(T, 384, 7, 12, generator=g).abs() for c in model.cfg.cameras}
    text = torch.randn(1, 6, 512, generator=g)
    ref = reference_logits(sd, feats, text, prev, in_hand, steps)
    cache = model.new_cache(1, 1000)
    one = lambda x: torch.tensor([[x]])  # noqa: E731
    with torch.no_grad():
        got = torch.cat([model(PolicyInput({c: f[t][None, None] for c, f in feats.items()}, text,
                                           torch.ones(1, 6, dtype=torch.bool), one(0), one(prev[t]), one(in_hand[t]),
                                           one(steps[t])), cache=cache)[0][0] for t in range(T)])
    assert ref.std() > 0.5  # logits of a useful size
    assert (got - ref).abs().max() < 2e-5, (got - ref).abs().max()


def test_runner_steps_converted_bundle(rl):
    b = load_bundle(rl[1])
    runner = PolicyRunner(b)  # T5 and DINOv2 from the bundle's local directories
    rng = np.random.default_rng(0)
    frames = {c: rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for c in b.config.cameras}
    for episode in range(2):  # a second episode after act() (KV-cache reset after inference mode)
        runner.start_episode("find the red mug")
        for t in range(2):
            dec = runner.act(frames, in_hand=False)
            assert dec.step == t and dec.action in STRETCH_ACTIONS and abs(sum(dec.probs) - 1) < 1e-5
    # the runner's step is the model applied to the DINOv2 features and the T5 features of the goal
    vision, text = Dinov2Features(b.vision_encoder["path"]), TextEncoder("t5", b.text_encoder["path"])
    prepared = runner.prepare(frames)
    feats = {k: vision(torch.from_numpy(v)[None])[:, None] for k, v in prepared.items()}
    t, m = text.encode_batch(["find the red mug"])
    one = lambda x: torch.tensor([[x]])  # noqa: E731
    runner.start_episode("find the red mug")
    dec = runner.act(frames, in_hand=True)
    with torch.no_grad():
        logits = b.model(PolicyInput(feats, t, m, one(0), one(20), one(1), one(0)), cache=b.model.new_cache(1, 10))[0]
    assert torch.allclose(torch.tensor(dec.probs), logits[0, 0].softmax(-1), atol=1e-5)


def il_checkpoint(t5_sd, seed=0):
    g = torch.Generator().manual_seed(seed)
    copy = synthetic_copy(SMALL, t5_sd, SMALL_T5, g)
    sd = {}
    for k, v in copy.items():
        if k.startswith("critic."):
            continue  # IL has no value head
        k = {"actor.linear.weight": "actor.weight", "actor.linear.bias": "actor.bias"}.get(k, k)
        sd["model." + k] = v.clone()
    for k, s in {"cls_token": (1, 1, 384), "pos_embed": (1, 1370, 384), "blocks.0.norm1.weight": (384,)}.items():
        sd["model.visual_encoder.image_encoder.model." + k] = torch.zeros(s)  # the IL model's DINOv2 copy
    return {"state_dict": sd, "epoch": 3, "global_step": 50000, "train_steps": 50000,
            "pytorch-lightning_version": "2.1.0", "optimizer_states": [], "lr_schedulers": []}


def test_il_conversion(tmp_path, small_t5):
    ckpt = il_checkpoint(small_t5[1])
    torch.save(ckpt, tmp_path / "FLaRe_IL_50000.ckpt")
    out = convert_checkpoint(tmp_path / "FLaRe_IL_50000.ckpt", tmp_path / "il", t5_dir=small_t5[0], cfg=SMALL,
                             t5=SMALL_T5)
    b = load_bundle(out, with_critic=True)
    assert b.critic is None and not (out / "critic.safetensors").exists()
    sd = b.model.state_dict()
    assert torch.equal(sd["actor.linear.weight"], ckpt["state_dict"]["model.actor.weight"])
    assert torch.equal(sd["decoder.output.weight"], ckpt["state_dict"]["model.decoder.output.weight"])
    w = sd["critic.fc.weight"]  # fresh value head: orthogonal (gain 1), zero bias
    assert torch.allclose(w.norm(), torch.tensor(1.0), atol=1e-5) and not sd["critic.fc.bias"].any()
    assert (b.provenance["format"], b.provenance["total_steps"], b.provenance["task"]) == ("lightning-il", 50000, "IL")


def _rl_small(t5_sd):
    ckpt = synthetic_rl(SMALL, t5_sd, SMALL_T5)
    ckpt["model_state_dict"] = {k: v.clone() for k, v in ckpt["model_state_dict"].items()}  # own storage per copy
    return ckpt


class Payload:
    """Unpickling this would create a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _bad(case, ckpt, tmp_path):
    sd = ckpt["model_state_dict"]
    if case == "missing key":
        del sd["decoder.norm.weight"]
    elif case == "extra key":
        sd["visual_encoder.bbox_encoder.weight"] = torch.zeros(3)
    elif case == "wrong shape":
        sd[CRITIC + "actor.linear.weight"] = torch.zeros(19, 32)
    elif case == "float16":
        sd["decoder.output.weight"] = sd["decoder.output.weight"].half()
    elif case == "nan":
        sd["decoder.output.weight"][0, 0] = float("nan")
    elif case == "ddp":
        ckpt["model_state_dict"] = {"module." + k: v for k, v in sd.items()}
    elif case == "untied t5":
        sd[T5_PREFIX + "shared.weight"] = sd[T5_PREFIX + "shared.weight"] + 1
    elif case == "div_term":
        sd["time_encoder.div_term"] = sd["time_encoder.div_term"] * 2
    elif case == "not a dict":
        return [torch.zeros(3)]
    elif case == "no model_state_dict":
        return {"weights": sd, "total_steps": 5}
    elif case == "payload":
        ckpt["training_pipeline_state_dict"] = Payload(tmp_path / "marker")
    return ckpt


@pytest.mark.parametrize("case, message", [
    ("missing key", "model_state_dict: 113 entries, expected 114; 1 missing: decoder.norm.weight"),
    ("extra key", "115 entries, expected 114; 1 unexpected: visual_encoder.bbox_encoder.weight"),
    ("wrong shape", r"1 shape mismatches: critic_tsfm.actor.linear.weight: file \(19, 32\), expected \(20, 32\)"),
    ("float16", r"1 tensors are not float32: decoder.output.weight \(torch.float16\)"),
    ("nan", "1 tensors contain NaN/inf: decoder.output.weight"),
    ("ddp", "114 keys carry a 'module.' prefix .*e.g. module.visual_encoder.fusion_token"),
    ("untied t5", "shared.weight != encoder.embed_tokens.weight"),
    ("div_term", "time_encoder.div_term differs"),
    ("not a dict", "expected a dict .* got list"),
    ("no model_state_dict", "no 'model_state_dict' .* top-level keys: weights, total_steps"),
    ("payload", "refused: the file holds a pickled object .*Unsupported global.*nothing in it was executed"),
])
def test_bad_checkpoints_are_refused(case, message, tmp_path, small_t5):
    obj = _bad(case, _rl_small(small_t5[1]), tmp_path)
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(ConvertError, match=message):
        convert_checkpoint(tmp_path / "bad.pt", tmp_path / "out", cfg=SMALL, t5=SMALL_T5)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "marker").exists()  # the payload was never executed


def test_small_checkpoint_converts_and_t5_dir_is_checked(tmp_path, small_t5):
    torch.save(_rl_small(small_t5[1]), tmp_path / "ok.pt")
    convert_checkpoint(tmp_path / "ok.pt", tmp_path / "out", t5_dir=small_t5[0], cfg=SMALL, t5=SMALL_T5)
    assert load_bundle(tmp_path / "out", with_critic=True).critic is not None
    other = tmp_path / "other-t5"
    random_t5(other, SMALL_T5, seed=1)  # a different T5 than the one in the checkpoint
    with pytest.raises(ConvertError, match=r"--t5 .*: 9 of 12 T5 tensors differ from the checkpoint's T5"):
        convert_checkpoint(tmp_path / "ok.pt", tmp_path / "out2", t5_dir=other, cfg=SMALL, t5=SMALL_T5)


def test_cli_refuses_unreadable_files(tmp_path, capsys):
    (tmp_path / "garbage.pt").write_bytes(b"this is not a checkpoint")
    assert main(["convert", str(tmp_path / "garbage.pt"), str(tmp_path / "out")]) == 2
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing.pt"), str(tmp_path / "out")]) == 2
    assert "no such file" in capsys.readouterr().err
    torch.save({"x": Payload(tmp_path / "marker")}, tmp_path / "evil.pt")
    assert main(["convert", str(tmp_path / "evil.pt"), str(tmp_path / "out")]) == 2
    assert "refused" in capsys.readouterr().err and not (tmp_path / "marker").exists()
    (tmp_path / "exists").mkdir()
    assert main(["convert", str(tmp_path / "garbage.pt"), str(tmp_path / "exists")]) == 2
    assert "use --force" in capsys.readouterr().err


def test_node_refuses_encoder_directories_the_bundle_was_not_converted_with(tmp_path, small_t5, dino_dir):
    """policy_node's load-time check (flare_policy.node_params.check_encoders) on real T5 / DINOv2 directories."""
    from types import SimpleNamespace

    from flare_policy.node_params import ConfigError, check_encoders

    torch.save(_rl_small(small_t5[1]), tmp_path / "ok.pt")
    convert_checkpoint(tmp_path / "ok.pt", tmp_path / "out", t5_dir=small_t5[0], cfg=SMALL, t5=SMALL_T5)
    b = load_bundle(tmp_path / "out")
    assert b.text_encoder["weights_sha256"] == b.provenance["t5_sha256"]
    # SMALL's visual width is not DINOv2's: record dino_dir's fingerprint as a full conversion does
    # (test_rl_conversion checks convert writes exactly this value)
    vision = dict(b.vision_encoder, weights_sha256=Dinov2Features(dino_dir).weights_sha256)
    bundle = SimpleNamespace(text_encoder=b.text_encoder, vision_encoder=vision,
                             config=SimpleNamespace(visual_dim=384))
    warnings = []
    check_encoders(bundle, TextEncoder("t5", small_t5[0]), Dinov2Features(dino_dir), warn=warnings.append)
    assert warnings == []
    other_t5 = tmp_path / "other-t5"
    random_t5(other_t5, SMALL_T5, seed=1)
    with pytest.raises(ConfigError, match=r"text encoder \(T5\) at .*other-t5 is not the one the bundle was "
                                          r"converted with: weights_sha256 expected [0-9a-f]{16}\.\.\., found"):
        check_encoders(bundle, TextEncoder("t5", other_t5), Dinov2Features(dino_dir))
    other_dino = random_dinov2(tmp_path / "other-dino", seed=1, num_hidden_layers=1)
    with pytest.raises(ConfigError, match=r"vision encoder \(DINOv2\) at .*other-dino is not the one"):
        check_encoders(bundle, TextEncoder("t5", small_t5[0]), Dinov2Features(other_dino))
    # explicitly overridden: runs, and says so
    check_encoders(bundle, TextEncoder("t5", other_t5), Dinov2Features(other_dino), allow_mismatch=True,
                   warn=warnings.append)
    assert len(warnings) == 2 and all("running anyway" in w for w in warnings)
    # int8 quantization does not change what is checked: the fingerprint is of the loaded fp32 weights
    assert Dinov2Features(dino_dir, quantize=True).weights_sha256 == vision["weights_sha256"]
    # a bundle that records nothing can only be warned about
    bare = SimpleNamespace(text_encoder={"kind": "t5"}, vision_encoder={"kind": "dinov2"},
                           config=SimpleNamespace(visual_dim=384))
    warnings.clear()
    check_encoders(bare, TextEncoder("t5", other_t5), Dinov2Features(other_dino), warn=warnings.append)
    assert len(warnings) == 2 and all("records no weights_sha256" in w for w in warnings)
    with pytest.raises(ConfigError, match="hidden size 384, the bundle's policy expects 512"):
        check_encoders(SimpleNamespace(text_encoder={"kind": "t5"}, vision_encoder={"kind": "dinov2"},
                                       config=SimpleNamespace(visual_dim=512)), None, Dinov2Features(dino_dir))
