"""DAgger collection (`flare-train dagger`) and BC on aggregated data: labels are the expert's, replayable."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flare_policy.bundle import load_bundle
from flare_training.bc import BCConfig, sample_batch, shard_probabilities, train
from flare_training.dagger import LEARNER_MAY_EXECUTE
from flare_training.dataset import DemoDataset
from flare_training.envs import make_env
from flare_training.expert import END, Expert

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "models" / "sim_tiny_bc"


def _dagger(out, *extra):
    cmd = [sys.executable, "-m", "flare_training.cli", "dagger", "--bundle", str(BUNDLE), "--out", str(out),
           "--task", "objectnav,pickup", "--episodes", "6", "--shard-size", "3", "--envs", "3", "--threads", "1",
           "--quiet", *extra]
    return subprocess.run(cmd, check=True, timeout=300, capture_output=True, text=True)


@pytest.fixture(scope="module")
def dagger_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("dagger")
    _dagger(out)
    return out


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    subprocess.run([sys.executable, "-m", "flare_training.cli", "demos", "--task", "pickup", "--episodes", "6",
                    "--out", str(out), "--workers", "1", "--shard-size", "3", "--quiet"], check=True, timeout=300)
    return out


def _shards(d):
    return sorted(Path(d).glob("*.npz"))


def test_learner_drives_and_expert_labels(dagger_dir):
    index = json.loads((dagger_dir / "index.json").read_text())
    assert {t: v["episodes"] for t, v in index["tasks"].items()} == {"objectnav": 6, "pickup": 6}
    learner_steps = 0
    for path in _shards(dagger_dir):
        with np.load(path, allow_pickle=False) as z:
            label, done = z["action"], z["executed"]
            assert len(label) == len(done) == len(z["rgb"]) == z["ep_offsets"][-1]
            # the learner's own choice is executed only where it is a navigation action or agrees
            differs = label != done
            assert np.isin(done[differs], list(LEARNER_MAY_EXECUTE)).all()
            assert not (done[differs] == END).any()
            learner_steps += int(differs.sum())
    assert learner_steps > 0  # the policy, not the expert, drove part of the way


def test_labels_replay_with_the_expert(dagger_dir):
    """Replaying the executed actions from the stored seed reproduces every frame, and the expert asked at
    each state (told what was executed before) gives the stored label."""
    path = _shards(dagger_dir)[0]
    with np.load(path, allow_pickle=False) as z:
        task, seed = str(z["task"][0]), int(z["seed"][0])
        a, b = int(z["ep_offsets"][0]), int(z["ep_offsets"][1])
        rgb, label, done = z["rgb"][a:b], z["action"][a:b], z["executed"][a:b]
    env = make_env(task)
    obs, _ = env.reset(seed=seed)
    expert, last = Expert(env), None
    for t in range(b - a):
        assert np.array_equal(obs["rgb"], rgb[t]), f"frame {t} differs"
        assert expert.act(last) == label[t], f"label {t} differs"
        obs, _, term, trunc, _ = env.step(int(done[t]))
        last = int(done[t])
    assert term or trunc


def test_rerun_resumes_without_collecting(dagger_dir):
    before = {p.name: p.stat().st_mtime_ns for p in _shards(dagger_dir)}
    _dagger(dagger_dir)
    assert {p.name: p.stat().st_mtime_ns for p in _shards(dagger_dir)} == before
    with pytest.raises(subprocess.CalledProcessError) as e:  # other options, same directory: refused
        _dagger(dagger_dir, "--beta", "0.5")
    assert "other parameters" in e.value.stderr


def test_previous_action_input_is_what_was_executed(dagger_dir):
    ds = DemoDataset([dagger_dir])
    z = ds.shard_arrays(0)
    n = len(z["action"])
    only_first = np.eye(len(ds.shards))[0]
    batch = sample_batch(ds, 1, n + 2, 8, np.random.default_rng(0), shard_p=only_first)  # the whole shard 0
    prev, step = batch["prev"][0, :n], batch["step"][0, :n]
    assert np.array_equal(batch["action"][0, :n], z["action"])
    want = np.r_[8, z["executed"][:-1]]
    want[step == 0] = 8
    assert np.array_equal(prev, want)
    assert (z["executed"] != z["action"]).any()  # so the label would have been the wrong input


def test_data_mix_sets_the_fraction_of_windows(dagger_dir, demos):
    ds = DemoDataset([demos, dagger_dir])
    p = shard_probabilities(ds, [0.2, 0.8])
    src = np.asarray(ds.shard_source)
    assert np.isclose(p[src == 0].sum(), 0.2) and np.isclose(p[src == 1].sum(), 0.8)
    rng = np.random.default_rng(0)
    draws = rng.choice(len(p), size=4000, p=p)
    assert abs((src[draws] == 1).mean() - 0.8) < 0.03
    for bad in ([1.0], [1.0, -1.0], [0.0, 0.0]):
        with pytest.raises(ValueError, match="data_mix"):
            shard_probabilities(ds, bad)


def test_bc_continues_from_an_init_bundle(dagger_dir, demos, tmp_path):
    init = load_bundle(BUNDLE)
    cfg = BCConfig(data=[str(demos), str(dagger_dir)], data_mix=[0.5, 0.5], init=str(BUNDLE),
                   out=str(tmp_path / "bundle"), logdir=str(tmp_path / "log"), steps=2, batch_size=2, window=8,
                   lr=1e-12, warmup=1, weight_decay=0.0, threads=1)
    train(cfg)
    out = load_bundle(tmp_path / "bundle")
    assert out.config == init.config
    ref = init.model.state_dict()
    assert all(torch.allclose(v, ref[k], atol=1e-6) for k, v in out.model.state_dict().items())
    assert out.meta["provenance"]["config"]["init"] == str(BUNDLE)
