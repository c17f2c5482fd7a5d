"""Behaviour cloning and evaluation on real mini-CHORES demos (tiny budgets)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from flare_policy.bundle import load_bundle
from flare_training.bc import BCConfig, sample_batch, train
from flare_training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from flare_training.dataset import DemoDataset

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    cmd = [sys.executable, "-m", "flare_training.cli", "demos", "--task", "pickup,objectnav", "--episodes", "12",
           "--out", str(out), "--workers", "1", "--shard-size", "6", "--quiet"]
    subprocess.run(cmd, check=True, timeout=300)
    return out


def test_packed_windows_follow_episodes(demos):
    ds = DemoDataset([demos])
    batch = sample_batch(ds, 6, 24, 8, np.random.default_rng(0))
    step, prev, act = batch["step"], batch["prev"], batch["action"]
    assert batch["valid"].any()
    # previous action is the start index exactly at episode starts, the action before otherwise
    assert (prev[step == 0] == 8).all()
    inner = (step[:, 1:] != 0)
    assert (prev[:, 1:][inner] == act[:, :-1][inner]).all()
    # steps count up by one inside an episode
    assert ((step[:, 1:] == step[:, :-1] + 1) | (step[:, 1:] == 0)).all()
    # each episode inside a window keeps one goal
    for b in range(6):
        episode = np.cumsum(step[b] == 0)
        for e in np.unique(episode):
            assert len(set(batch["goal_row"][b][episode == e])) == 1


def test_window_longer_than_a_shard_is_padded_and_masked(demos):
    ds = DemoDataset([demos])
    longest = max(ds.shard_offsets(s)[-1] for s in range(len(ds.shards)))
    batch = sample_batch(ds, 3, int(longest) + 5, 8, np.random.default_rng(1))
    assert (~batch["valid"]).any(axis=1).all()  # every window runs past its shard
    assert not (batch["step"][~batch["valid"]] == 0).any()


def test_bc_writes_bundle_and_resumes(demos, tmp_path):
    cfg = BCConfig(data=[str(demos)], out=str(tmp_path / "bundle"), logdir=str(tmp_path / "log"), steps=30,
                   batch_size=4, window=16, lr=2e-3, warmup=5, checkpoint_every=15, threads=1)
    train(cfg)
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.embodiment.name == "sim" and bundle.meta["provenance"]["step"] == 30
    state = load_checkpoint(tmp_path / "log" / "checkpoint.pt")
    assert state["step"] == 30
    # resuming a finished run does no further steps and keeps the weights
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    train(cfg)
    after = load_bundle(tmp_path / "bundle").model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # longer budget continues from step 30, not from scratch
    cfg.steps = 40
    train(cfg)
    assert load_checkpoint(tmp_path / "log" / "checkpoint.pt")["step"] == 40


def test_checkpoint_corruption_is_reported(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"x": torch.ones(3), "step": 1}, path)
    assert load_checkpoint(path)["step"] == 1
    # a kill between the data rename and the checksum rename: new data, old checksum, pending checksum
    pending = path.with_name("c.pt.sha256.pending")
    save_checkpoint({"x": torch.ones(3), "step": 2}, tmp_path / "new.pt")
    (tmp_path / "new.pt").replace(path)
    (tmp_path / "new.pt.sha256").replace(pending)
    assert load_checkpoint(path)["step"] == 2
    pending.unlink()
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)
    save_checkpoint({"x": torch.ones(3), "step": 1}, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)


def test_eval_is_deterministic_and_reports_metrics(tmp_path):
    from flare_policy.bundle import save_bundle, sim_camera
    from flare_policy.model import PolicyNet, tiny
    from flare_training.evaluate import evaluate

    torch.manual_seed(0)
    save_bundle(tmp_path / "b", PolicyNet(tiny()), embodiment="sim", cameras=[sim_camera()],
                text_encoder={"kind": "minilm"})
    bundle = load_bundle(tmp_path / "b")
    runs = [evaluate(bundle, "pickup", 6, n_envs=3, progress=False, greedy=False, video_dir=tmp_path / "v",
                     n_videos=1) for _ in range(2)]
    assert runs[0]["per_episode"] == runs[1]["per_episode"]
    s = runs[0]
    assert s["success"]["n"] == 6 and 0 <= s["success"]["mean"] <= 1
    assert all(r["length"] >= 1 and r["expert_length"] > 0 for r in s["per_episode"])
    assert len({r["seed"] for r in s["per_episode"]}) == 6
    # outcomes: a step-limit episode ran 64 steps (pickup's limit), an `end` judged a failure fewer
    assert sum(s["outcomes"].values()) == 6 and s["outcomes"]["success"] == round(6 * s["success"]["mean"])
    for r in s["per_episode"]:
        assert (r["outcome"] == "success") == r["success"]
        assert r["outcome"] != "timeout" or r["length"] == 64
    assert list((tmp_path / "v").glob("pickup_000_*.gif"))
    json.dumps({k: v for k, v in s.items() if k != "per_episode"})


def test_eval_record_writes_the_figures_into_the_bundle(tmp_path):
    from flare_policy.bundle import save_bundle, sim_camera
    from flare_policy.model import PolicyNet, tiny
    from flare_training.evaluate import main

    torch.manual_seed(0)
    save_bundle(tmp_path / "b", PolicyNet(tiny()), embodiment="sim", cameras=[sim_camera()],
                text_encoder={"kind": "minilm"})
    weights = (tmp_path / "b" / "model.safetensors").read_bytes()
    for extra in ([], ["--sample"]):
        assert main(["--bundle", str(tmp_path / "b"), "--task", "pickup", "--episodes", "4", "--envs", "2",
                     "--threads", "1", "--json", "--record", *extra]) == 0
    ev = json.loads((tmp_path / "b" / "policy.json").read_text())["evaluation"]["pickup"]
    assert set(ev) == {"greedy", "sampled"}
    for mode in ev.values():
        row = mode["val"]
        assert row["episodes"] == 4 and row["success"]["n"] == 4 and "per_episode" not in row
        assert row["env"] == "minichores" and row["kv_window"] == 1000
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == weights
    load_bundle(tmp_path / "b")  # still a valid bundle


def test_decision_weight_weights_the_steps_facing_an_object(demos):
    import torch.nn.functional as F

    from flare_policy.model import PolicyNet, tiny
    from flare_policy.text import TextEncoder
    from flare_training.agent import GoalBank, make_input
    from flare_training.bc import bc_loss
    from flare_training.envs.render import object_in_front

    ds = DemoDataset([demos])
    batch = sample_batch(ds, 4, 32, 8, np.random.default_rng(3))
    front = object_in_front(batch["rgb"])
    assert front.shape == (4, 32) and front[batch["valid"]].any() and not front[batch["valid"]].all()
    torch.manual_seed(0)
    model = PolicyNet(tiny())
    bank = GoalBank(TextEncoder("minilm"))
    plain, _ = bc_loss(model, batch, bank)
    same, _ = bc_loss(model, batch, bank, decision_weight=1.0)
    heavy, _ = bc_loss(model, batch, bank, decision_weight=10.0)
    with torch.no_grad():
        inp = make_input(batch["rgb"], bank.index(batch["goals"])[batch["goal_row"]], batch["prev"],
                         batch["in_hand"], batch["step"], bank)
        logits = model(inp)[0]
        v = torch.as_tensor(batch["valid"])
        ce = F.cross_entropy(logits[v], torch.as_tensor(batch["action"])[v], reduction="none")
        w = torch.where(torch.as_tensor(front)[v], 10.0, 1.0)
    assert float(same) == float(plain)
    assert float(heavy) == pytest.approx(float((ce * w).sum() / w.sum()), rel=1e-5)
    assert float(w.max()) == 10.0 and float(w.min()) == 1.0  # both kinds of step are in the batch


def test_object_in_front_matches_the_simulator():
    from flare_training.envs import make_env
    from flare_training.envs.render import object_in_front

    env = make_env("objectnav")
    rng = np.random.default_rng(0)
    seen = set()
    for seed in range(12):
        obs, _ = env.reset(seed=seed)
        for t in range(40):
            level = env.env.unwrapped
            cell = level.grid.get(*level.front_pos)
            truth = cell is not None and cell.type in ("ball", "box", "key")
            assert bool(object_in_front(obs["rgb"])) == truth, (seed, t)
            seen.add(truth)
            obs, _, term, trunc, _ = env.step(int(rng.integers(0, 3)) if t % 5 else 0)
            if term or trunc:
                break
    assert seen == {True, False}
