"""Policy bundles: round trip, validation errors that name the problem, nothing unpickled, `inspect`."""
import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from flare_policy.bundle import BundleError, flare_camera, load_bundle, save_bundle, sim_camera
from flare_policy.cli import main
from flare_policy.model import PolicyInput, PolicyNet, tiny

torch.set_num_threads(1)


def tiny_inputs(cfg, T=4):
    g = torch.Generator().manual_seed(0)
    images = {c: torch.randint(0, 256, (1, T, *cfg.image_size, 3), generator=g, dtype=torch.uint8) for c in cfg.cameras}
    one = lambda x: torch.full((1, T), x)  # noqa: E731
    return PolicyInput(images, torch.randn(1, 5, cfg.text_dim, generator=g), torch.ones(1, 5, dtype=torch.bool),
                       one(0), one(cfg.n_actions), one(0), torch.arange(T)[None])


@pytest.fixture()
def bundle(tmp_path):
    torch.manual_seed(0)
    model = PolicyNet(tiny()).eval()
    critic = PolicyNet(tiny()).eval()
    path = save_bundle(tmp_path / "b", model, embodiment="sim", cameras=[sim_camera()],
                       text_encoder={"kind": "minilm"}, provenance={"trained_by": "test"}, critic=critic)
    return path, model, critic


def edit_meta(path, fn):
    meta = json.loads((path / "policy.json").read_text())
    fn(meta)
    (path / "policy.json").write_text(json.dumps(meta))


def test_round_trip(bundle):
    path, model, critic = bundle
    b = load_bundle(path, with_critic=True)
    assert b.config == model.cfg
    assert b.embodiment.name == "sim" and b.actions == b.embodiment.actions
    assert [c.name for c in b.cameras] == ["raw_navigation_camera"]
    assert b.text_encoder == {"kind": "minilm"} and b.provenance == {"trained_by": "test"}
    for ref, got in ((model, b.model), (critic, b.critic)):
        sd, got_sd = ref.state_dict(), got.state_dict()
        assert sd.keys() == got_sd.keys() and all(torch.equal(sd[k], got_sd[k]) for k in sd)
    inp = tiny_inputs(model.cfg)
    with torch.no_grad():
        assert torch.equal(model(inp)[0], b.model(inp)[0])
    assert not b.model.training
    assert load_bundle(path).critic is None  # the critic copy is only loaded on request
    assert sorted(p.name for p in path.iterdir()) == ["critic.safetensors", "model.safetensors", "policy.json"]


def test_save_refuses_mismatched_embodiment(tmp_path):
    with pytest.raises(BundleError, match="8 actions, embodiment 'stretch' has 20"):
        save_bundle(tmp_path / "x", PolicyNet(tiny()), embodiment="stretch",
                    cameras=[flare_camera("raw_navigation_camera")], text_encoder={"kind": "minilm"})
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("case, message", [
    ("missing_dir", "not a bundle directory"),
    ("missing_json", "missing policy.json"),
    ("missing_weights", "missing model.safetensors"),
    ("bad_json", "not valid JSON"),
    ("json_not_object", "expected a JSON object"),
    ("schema", "schema_version 99 is not supported"),
    ("format", "'format' is 'something-else'"),
    ("unknown_embodiment", "unknown embodiment 'robot9'"),
    ("actions", "do not match embodiment 'sim'"),
    ("text_dim", "gives 512-d tokens but model.text_dim is 384"),
    ("shape", r"shape mismatch for visual_encoder\.fusion_xformer\.layers\.\d\.linear[12]\.\w+: file \([\d, ]+\), "
              r"model \([\d, ]+\)"),
    ("missing_key", "missing \\['actor.linear.bias'\\]"),
    ("nan", "decoder.output.weight contains NaN"),
    ("dtype", "has dtype torch.float16, expected float32"),
    ("not_safetensors", "not a readable safetensors file"),
    ("bad_config", "unknown model config keys: \\['wings'\\]"),
])
def test_load_errors_name_the_problem(bundle, case, message):
    path = bundle[0]
    weights = path / "model.safetensors"

    def rewrite(fn):
        sd = load_file(str(weights))
        fn(sd)
        save_file(sd, str(weights))

    if case == "missing_dir":
        path = path / "nope"
    elif case == "missing_json":
        (path / "policy.json").unlink()
    elif case == "missing_weights":
        weights.unlink()
    elif case == "bad_json":
        (path / "policy.json").write_text("{not json")
    elif case == "json_not_object":
        (path / "policy.json").write_text("[1, 2]")
    elif case == "schema":
        edit_meta(path, lambda m: m.update(schema_version=99))
    elif case == "format":
        edit_meta(path, lambda m: m.update(format="something-else"))
    elif case == "unknown_embodiment":
        edit_meta(path, lambda m: m.update(embodiment="robot9"))
    elif case == "actions":
        edit_meta(path, lambda m: m["actions"].reverse())
    elif case == "text_dim":
        edit_meta(path, lambda m: m.update(text_encoder={"kind": "t5", "path": "/x"}))
    elif case == "shape":
        edit_meta(path, lambda m: m["model"].update(fusion_ff=512))
    elif case == "missing_key":
        rewrite(lambda sd: sd.pop("actor.linear.bias"))
    elif case == "nan":
        rewrite(lambda sd: sd["decoder.output.weight"].__setitem__((0, 0), float("nan")))
    elif case == "dtype":
        rewrite(lambda sd: sd.update({"actor.linear.bias": sd["actor.linear.bias"].half()}))
    elif case == "not_safetensors":
        weights.write_bytes(b"\x00" * 64)
    elif case == "bad_config":
        edit_meta(path, lambda m: m["model"].update(wings=2))
    with pytest.raises(BundleError, match=message):
        load_bundle(path)


def test_nothing_is_unpickled(bundle, monkeypatch):
    path = bundle[0]
    assert {p.suffix for p in path.iterdir()} == {".json", ".safetensors"}

    def refuse(*a, **k):
        raise AssertionError("a bundle load tried to unpickle something")

    for mod, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(mod, name, refuse)
    b = load_bundle(path, with_critic=True)
    assert b.critic is not None


def test_inspect_cli(bundle, capsys):
    path, model, _ = bundle
    assert main(["inspect", str(path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["embodiment"] == "sim" and d["trainable_parameters"] == model.n_trainable()
    assert [a["name"] for a in d["actions"]][:2] == ["move_ahead", "rotate_left"]
    assert d["cameras"][0]["crop"] == [56, 56] and d["text_encoder"]["kind"] == "minilm"
    assert d["provenance"] == {"trained_by": "test"} and d["has_critic"]
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "embodiment    sim" in text and f"{model.n_trainable():,} trainable" in text
    (path / "policy.json").unlink()
    assert main(["inspect", str(path)]) == 2
    assert "missing policy.json" in capsys.readouterr().err
