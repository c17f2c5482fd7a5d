"""Expert, watchdog, `flare-train demos` (sharded, resumable) and the DemoDataset reader. Real MiniGrid, no mocks.

The 200-seeds-per-family expert measurement is `python -m flare_training.envs.bench --expert-seeds 200`; here
20 seeds per demo family keep the file fast."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from flare_policy.embodiments import SIM_ACTIONS
from flare_training import demos
from flare_training.dataset import DemoDataset
from flare_training.envs import DEMO_TASKS, HELDOUT_TASKS, make_env, split_seeds
from flare_training.expert import (END, SUB_DONE, Expert, ExpertTimeout, expert_length, run_expert,
                                   run_expert_episode, watchdog)

MOVE, LEFT, RIGHT = 0, 1, 2


@pytest.mark.parametrize("task", DEMO_TASKS)
def test_expert_solves_demo_families(task):
    env = make_env(task)
    ok = sum(run_expert(env, s, 3.0, record=False)[1] == "ok" for s in split_seeds("val", 20))
    assert ok == 20


@pytest.mark.parametrize("task", HELDOUT_TASKS)
def test_expert_solves_heldout_families(task):
    env = make_env(task)
    assert all(run_expert(env, s, 3.0, record=False)[1] == "ok" for s in range(8))


@pytest.mark.parametrize("task", ["objectnav", "objectnav_affordance", "roomnav"])
def test_expert_on_sim_locobot(task):
    env = make_env(task, embodiment="sim_locobot")
    eps = [run_expert(env, s, 3.0, record=False)[0] for s in range(8)]
    assert all(e is not None for e in eps)


@pytest.mark.parametrize("task", ["objectnav", "fetch", "roomvisit", "roomnav"])
def test_expert_relabels_after_deviations(task):
    """DAgger-style: after a few off-policy actions the expert still leads to success."""
    env = make_env(task)
    rng = np.random.default_rng(0)
    for seed in range(4):
        env.reset(seed=seed)
        ex = Expert(env)
        last = None
        for t in range(env.max_steps):
            a = ex.act(last)
            if t < 6:
                a = int(rng.choice([MOVE, LEFT, RIGHT]))
            _, _, term, trunc, info = env.step(a)
            last = a
            if term or trunc:
                break
        assert info["success"], (task, seed)


def face(level, obj):
    """Put the agent on a free cell next to `obj`, facing it."""
    ox, oy = obj.cur_pos
    for d, (dx, dy) in enumerate(((1, 0), (0, 1), (-1, 0), (0, -1))):
        if level.grid.get(ox - dx, oy - dy) is None:
            level.agent_pos, level.agent_dir = (ox - dx, oy - dy), d
            return True
    return False


def test_expert_ends_as_soon_as_goal_is_met():
    env = make_env("objectnav")
    env.reset(seed=3)
    ex = Expert(env)
    lv = env.unwrapped
    assert face(lv, lv.targets[0])  # e.g. a learner that walked up to the target on its own
    assert ex.act(None) == END
    env = make_env("pickup")
    env.reset(seed=3)
    ex = Expert(env)
    lv = env.unwrapped
    assert face(lv, lv.targets[0])
    a = ex.act(None)
    assert SIM_ACTIONS[a] == "pickup"
    env.step(a)
    assert ex.act(a) == END


def test_episode_contents():
    env = make_env("pickup")
    ep = run_expert_episode(env, 5)
    T = ep.expert_length
    assert len(ep) == T and ep.rgb.shape == (T, 56, 56, 3) and ep.action.shape == (T,)
    assert np.array_equal(ep.step, np.arange(T))  # observation recorded before each action
    assert ep.action[-1] == END and ep.in_hand[0] == 0 and ep.in_hand[-1] == 1 and ep.success
    obs, _ = env.reset(seed=5)
    assert np.array_equal(ep.rgb[0], obs["rgb"]) and ep.goal == obs["goal"]
    ep = run_expert_episode(make_env("roomvisit"), 3)
    env = make_env("roomvisit")
    _, info = env.reset(seed=3)
    assert int((ep.action == SUB_DONE).sum()) == info["rooms_total"]


def test_expert_length_matches_recorded_episode():
    for task in ("objectnav", "roomvisit"):
        ep = run_expert_episode(make_env(task), 11)
        assert expert_length(task, 11) == ep.expert_length
    env = make_env("objectnav", with_expert_length=True)
    _, info = env.reset(seed=11)
    assert info["expert_length"] == expert_length("objectnav", 11)


def test_watchdog_interrupts_pure_python_loop():
    t0 = time.monotonic()
    with pytest.raises(ExpertTimeout):
        with watchdog(0.2):
            while True:
                pass
    assert time.monotonic() - t0 < 2.0
    ep, status = run_expert(make_env("roomvisit"), 0, watchdog_s=1e-5)
    assert ep is None and status == "hung"
    assert run_expert(make_env("roomvisit"), 0, watchdog_s=3.0)[1] == "ok"  # the alarm was disarmed


# ---------------------------------------------------------------------------------------------- demos CLI
def _run(out, *extra, episodes=5, task="all", workers=2, shard=2):
    return demos.main(["--task", task, "--episodes", str(episodes), "--out", str(out), "--workers", str(workers),
                       "--shard-size", str(shard), "--quiet", *extra])


@pytest.fixture(scope="module")
def small_demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    assert _run(out) == 0
    return out


def test_demos_cli_writes_dataset(small_demos):
    index = json.loads((small_demos / "index.json").read_text())
    assert list(index["tasks"]) == list(DEMO_TASKS)
    for task, entry in index["tasks"].items():
        assert entry["episodes"] == 5 and entry["complete"] and len(entry["shards"]) == 3
        assert entry["expert_success"] == 1.0
        for sh in entry["shards"]:
            assert (small_demos / sh["file"]).exists()
    ds = DemoDataset(small_demos)
    assert len(ds) == 20 and ds.task_names() == sorted(DEMO_TASKS)
    # an episode equals a fresh expert rollout of its seed
    for i in (0, 7, 19):
        e = ds.episode(i)
        ref = run_expert_episode(make_env(e["task"]), e["seed"])
        assert np.array_equal(e["action"], ref.action) and np.array_equal(e["rgb"], ref.rgb)
        assert np.array_equal(e["in_hand"], ref.in_hand) and np.array_equal(e["step"], ref.step)
        assert e["goal"] == ref.goal and e["expert_length"] == ref.expert_length == len(e["action"])


def test_dataset_windows_are_consistent(small_demos):
    for cache in (16, 2):
        ds = DemoDataset(small_demos, cache_shards=cache, refresh_every=1)
        rng = np.random.default_rng(0)
        for _ in range(4):
            w = ds.sample_windows(6, 24, rng, allow_partial=True)
            assert w["rgb"].shape == (6, 24, 56, 56, 3) and w["mask"].shape == (6, 24)
            for b, i in enumerate(w["episode"]):
                e = ds.episode(i)
                s = w["start"][b]
                n = min(24, len(e["action"]) - s)
                assert w["mask"][b].sum() == n and w["mask"][b, :n].all()
                assert np.array_equal(w["action"][b, :n], e["action"][s:s + n])
                assert np.array_equal(w["rgb"][b, :n], e["rgb"][s:s + n])
                assert np.array_equal(w["step"][b, :n], np.arange(s, s + n))
                assert not w["rgb"][b, n:].any() and not w["action"][b, n:].any()
                assert w["goal"][b] == e["goal"] and w["task"][b] == e["task"]
        assert len(ds._cache) <= cache
    ds = DemoDataset(small_demos)
    for sid in range(len(ds.shards)):  # shard-level access agrees with episode()
        offs, eps = ds.shard_offsets(sid), ds.shard_episodes(sid)
        z = ds.shard_arrays(sid)
        assert len(offs) == len(eps) + 1 and offs[-1] == len(z["action"])
        for k, i in enumerate(eps):
            assert np.array_equal(z["action"][offs[k]:offs[k + 1]], ds.episode(i)["action"])
    w = ds.sample_windows(16, 2, np.random.default_rng(1))
    assert w["mask"].all()  # full windows by default (every episode has >= 2 steps: a move and `end`)
    w = ds.sample_windows(16, 40, np.random.default_rng(1))
    for b, i in enumerate(w["episode"]):  # windows longer than the episode start at 0
        assert w["start"][b] == 0 or ds.lengths[i] > 40


def test_demos_resume_rewrites_only_missing_shards(small_demos, tmp_path):
    out = tmp_path / "d"
    assert _run(out, task="pickup,roomvisit", workers=1) == 0
    files = sorted(p for p in out.iterdir() if p.suffix == ".npz")
    mtimes = {p.name: p.stat().st_mtime_ns for p in files}
    victim = out / "roomvisit-00001.npz"
    victim.unlink()
    (out / "pickup-00002.npz.tmp-999.npz").write_bytes(b"partial")  # leftover of a killed run
    (out / "pickup-00002.npz").write_bytes(b"truncated")               # a corrupt shard
    assert _run(out, task="pickup,roomvisit", workers=1) == 0
    assert not any(".tmp-" in p.name for p in out.iterdir())
    for p in sorted(p for p in out.iterdir() if p.suffix == ".npz"):
        if p.name in ("roomvisit-00001.npz", "pickup-00002.npz"):
            continue
        assert p.stat().st_mtime_ns == mtimes[p.name], p.name
    # deterministic: identical to the same shards generated in the other directory
    for name in ("roomvisit-00001.npz", "pickup-00002.npz"):
        with np.load(out / name) as a, np.load(small_demos / name) as b:
            for k in ("rgb", "action", "seed", "goal"):
                assert np.array_equal(a[k], b[k])
    # growing the dataset keeps the complete shards
    assert _run(out, task="pickup", workers=1, episodes=7) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["tasks"]["pickup"]["episodes"] == 7 and index["tasks"]["roomvisit"]["episodes"] == 5
    assert (out / "pickup-00000.npz").stat().st_mtime_ns == mtimes["pickup-00000.npz"]
    assert len(DemoDataset(out)) == 12
    # other parameters in the same directory are refused
    with pytest.raises(SystemExit):
        _run(out, "--split", "val", task="pickup")


def test_demos_cli_killed_then_resumed(tmp_path):
    out = tmp_path / "k"
    cmd = [sys.executable, "-m", "flare_training.cli", "demos", "--task", "roomvisit", "--episodes", "24",
           "--shard-size", "2", "--workers", "1", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "roomvisit-00001.npz").exists():
            proc.kill()
            break
        time.sleep(0.01)
    proc.wait()
    if proc.returncode != 0:  # killed mid-run: the index lists only complete shards
        assert json.loads((out / "index.json").read_text())["tasks"]["roomvisit"]["episodes"] < 24
    assert demos.main(cmd[4:]) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["tasks"]["roomvisit"]["episodes"] == 24
    ds = DemoDataset(out)
    assert len(ds) == 24 and len(set(ds.seeds.tolist())) == 24


def test_demos_cli_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        demos.main(["--help"])
    assert e.value.code == 0 and "--episodes" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        demos.main(["--task", "roomnav", "--episodes", "1", "--out", str(tmp_path / "x")])  # held out
    with pytest.raises(SystemExit):
        demos.main(["--task", "nope", "--episodes", "1", "--out", str(tmp_path / "x")])
