"""mini-CHORES task families: spaces, determinism, seed splits, SEL, success rules, rendering, embodiments.

Everything runs real MiniGrid levels (no mocks). Where a test needs the agent in a particular place it either
drives there with the expert or sets the MiniGrid agent pose directly.
"""
import numpy as np
import pytest

from flare_policy.embodiments import SIM_ACTIONS
from flare_training.envs import (DEMO_TASKS, HELDOUT_TASKS, SPLITS, TASKS, make_env, seed_split, sel,
                                 split_seeds)
from flare_training.envs import levels as L
from flare_training.envs.core import bfs_distances
from flare_training.expert import Expert

MOVE, LEFT, RIGHT, PICKUP, DROP, TOGGLE, END, SUB_DONE = range(8)


def drive_to_end(env, seed):
    """Reset and follow the expert until it wants to say `end`; returns the actions taken."""
    env.reset(seed=seed)
    expert = Expert(env)
    last, acts = None, []
    for _ in range(env.max_steps):
        a = expert.act(last)
        if a == END:
            return acts
        _, _, term, trunc, _ = env.step(a)
        assert not (term or trunc)
        acts.append(a)
        last = a
    raise AssertionError("expert did not finish")


def face(level, obj):
    """Put the agent on a free cell next to `obj`, facing it. Returns False if there is none."""
    ox, oy = obj.cur_pos
    for d, (dx, dy) in enumerate(((1, 0), (0, 1), (-1, 0), (0, -1))):
        x, y = ox - dx, oy - dy
        if level.grid.get(x, y) is None:
            level.agent_pos, level.agent_dir = (x, y), d
            return True
    return False


def objects(level):
    return [c for c in level.grid.grid if c is not None and c.type in ("key", "ball", "box")]


# ---------------------------------------------------------------------------------------------- contract
def test_action_set_and_task_lists():
    assert SIM_ACTIONS == ("move_ahead", "rotate_left", "rotate_right", "pickup", "dropoff", "toggle", "end",
                           "sub_done")
    assert DEMO_TASKS == ("objectnav", "pickup", "fetch", "roomvisit")
    assert HELDOUT_TASKS == ("objectnav_localref", "objectnav_affordance", "roomnav")
    assert set(TASKS) == set(DEMO_TASKS) | set(HELDOUT_TASKS)
    assert all(TASKS[t].heldout for t in HELDOUT_TASKS) and not any(TASKS[t].heldout for t in DEMO_TASKS)
    # CHORES-like ratio: roomvisit gets 5/3 of objectnav's budget.
    assert TASKS["roomvisit"].max_steps * 3 == TASKS["objectnav"].max_steps * 5
    with pytest.raises(ValueError):
        make_env("nope")


@pytest.mark.parametrize("task", list(TASKS))
def test_spaces_reset_and_step(task):
    env = make_env(task)
    obs, info = env.reset(seed=3)
    assert env.action_space.n == 8
    assert env.observation_space.contains(obs)
    assert obs["rgb"].shape == (56, 56, 3) and obs["rgb"].dtype == np.uint8
    assert obs["step"] == 0 and obs["in_hand"] == 0 and isinstance(obs["goal"], str) and obs["goal"]
    assert info["success"] is False and info["task"] == task
    obs, r, term, trunc, info = env.step(LEFT)
    assert obs["step"] == 1 and r == 0.0 and not term and not trunc
    assert env.observation_space.contains(obs)
    if task == "roomvisit":
        assert {"rooms_total", "rooms_marked", "pct_rooms"} <= set(info)


@pytest.mark.parametrize("task", list(TASKS))
def test_reset_is_deterministic(task):
    a, b = make_env(task), make_env(task)
    oa, _ = a.reset(seed=123)
    b.reset(seed=7)
    b.step(MOVE)
    ob, _ = b.reset(seed=123)
    assert oa["goal"] == ob["goal"]
    assert np.array_equal(oa["rgb"], ob["rgb"])
    la, lb = a.unwrapped, b.unwrapped
    assert np.array_equal(la.grid.encode(), lb.grid.encode())
    assert tuple(la.agent_pos) == tuple(lb.agent_pos) and la.agent_dir == lb.agent_dir
    goals = {a.reset(seed=s)[0]["goal"] for s in range(12)}
    assert len(goals) > 3


def test_roomvisit_house_sizes_vary_with_seed():
    env = make_env("roomvisit")
    sizes = {env.reset(seed=s)[1]["rooms_total"] for s in range(40)}
    assert sizes == {4, 6, 9}
    obs, info = env.reset(seed=5)
    assert f"all {info['rooms_total']} rooms" in obs["goal"]


def test_goal_templates():
    verbs = ("go to", "locate", "find", "search for", "navigate to")
    env = make_env("objectnav")
    for s in range(10):
        g = env.reset(seed=s)[0]["goal"]
        assert g.startswith(verbs) and (" a " in g or " the " in g)
    env = make_env("pickup")
    assert all(env.reset(seed=s)[0]["goal"].startswith(L.PICKUP_VERBS) for s in range(10))
    env = make_env("fetch")
    assert all(" and " in env.reset(seed=s)[0]["goal"] for s in range(5))
    env = make_env("objectnav_localref")
    locs = ("in front of you", "behind you", "on your left", "on your right")
    assert all(env.reset(seed=s)[0]["goal"].endswith(locs) for s in range(10))
    env = make_env("objectnav_affordance")
    phrases = [p for ps in L.AFFORDANCES.values() for p in ps]
    for s in range(10):
        g = env.reset(seed=s)[0]["goal"]
        assert any(g.endswith(p) for p in phrases) and not any(t in g for t in ("key", "ball", "box"))


# ---------------------------------------------------------------------------------------------- seeds, SEL
def test_split_seeds_are_disjoint():
    assert SPLITS == {"train": (0, 10**9), "val": (10**9, 15 * 10**8), "test": (15 * 10**8, 2 * 10**9)}
    tr, va, te = split_seeds("train", 100), split_seeds("val", 100), split_seeds("test", 100, offset=5)
    assert tr == list(range(100)) and va[0] == 10**9 and te[0] == 15 * 10**8 + 5
    assert not (set(tr) & set(va)) and not (set(va) & set(te)) and not (set(tr) & set(te))
    assert {seed_split(s) for s in tr} == {"train"} and seed_split(va[-1]) == "val" and seed_split(te[0]) == "test"
    with pytest.raises(ValueError):
        split_seeds("train", 10, offset=10**9 - 5)  # would spill into val
    with pytest.raises(ValueError):
        split_seeds("bogus", 1)


def test_sel_edge_cases():
    assert sel(True, 10, 10) == 1.0
    assert sel(True, 20, 10) == 0.5
    assert sel(True, 5, 10) == 1.0  # shorter than the expert still counts as 1
    assert sel(False, 10, 10) == 0.0
    assert sel(True, 0, 0) == 1.0 and sel(True, 3, 0) == 0.0
    assert sel(True, 3, -1) is None and sel(False, 3, None) is None


# ---------------------------------------------------------------------------------------------- success rules
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_objectnav_success_only_when_facing_target_at_end(seed):
    env = make_env("objectnav")
    drive_to_end(env, seed)
    lv = env.unwrapped
    assert lv.front_is_target()
    _, r, term, trunc, info = env.step(END)
    assert info["success"] and r == 10.0 and term and not trunc
    with pytest.raises(RuntimeError):
        env.step(MOVE)
    # the same state, but turned away before `end`
    drive_to_end(env, seed)
    env.step(LEFT)
    assert not lv.front_is_target()
    _, r, term, _, info = env.step(END)
    assert term and not info["success"] and r == 0.0


def test_objectnav_end_at_start_or_at_wrong_object_fails():
    env = make_env("objectnav")
    _, info = env.reset(seed=4)
    _, r, term, _, info = env.step(END)
    assert term and not info["success"] and r == 0.0
    found = 0
    for seed in range(10):
        env.reset(seed=seed)
        lv = env.unwrapped
        wrong = [o for o in objects(lv) if (o.type, o.color) != (lv.target_desc.type, lv.target_desc.color)]
        if not wrong or not face(lv, wrong[0]):
            continue
        _, r, term, _, info = env.step(END)
        assert term and not info["success"] and r == 0.0
        found += 1
    assert found >= 5


@pytest.mark.parametrize("task", ["pickup", "fetch"])
def test_pick_tasks_need_target_in_hand(task):
    env = make_env(task)
    # success: holding the target at `end`
    drive_to_end(env, 0)
    assert env.unwrapped.holds_target()
    obs, r, term, _, info = env.step(END)
    assert info["success"] and r == 10.0 and obs["in_hand"] == 1
    # holding nothing: drop it again first
    drive_to_end(env, 0)
    obs, *_ = env.step(DROP)
    assert obs["in_hand"] == 0
    _, r, term, _, info = env.step(END)
    assert term and not info["success"] and r == 0.0
    # facing (not holding) the target
    env.reset(seed=1)
    lv = env.unwrapped
    assert face(lv, lv.targets[0])
    _, _, term, _, info = env.step(END)
    assert term and not info["success"]
    # holding the wrong object
    checked = 0
    for seed in range(10):
        env.reset(seed=seed)
        lv = env.unwrapped
        wrong = [o for o in objects(lv) if not any(o is t for t in lv.targets)]
        if not wrong or not face(lv, wrong[0]):
            continue
        obs, *_ = env.step(PICKUP)
        assert obs["in_hand"] == 1
        _, r, term, _, info = env.step(END)
        assert term and not info["success"] and r == 0.0
        checked += 1
    assert checked >= 5


def test_pickup_target_starts_near_and_in_view():
    env = make_env("pickup")
    for s in range(20):
        env.reset(seed=s)
        lv = env.unwrapped
        ax, ay = lv.agent_pos
        assert any(abs(t.cur_pos[0] - ax) + abs(t.cur_pos[1] - ay) <= 3 and lv.in_view(*t.cur_pos)
                   for t in lv.targets)


def _roomvisit_expert_actions(env, seed):
    env.reset(seed=seed)
    ex = Expert(env)
    last, acts = None, []
    while True:
        a = ex.act(last)
        acts.append(a)
        _, _, term, trunc, info = env.step(a)
        last = a
        if term or trunc:
            return acts, info


def test_roomvisit_success_requires_marking_every_room():
    env = make_env("roomvisit")
    acts, info = _roomvisit_expert_actions(env, 2)
    assert info["success"] and info["rooms_marked"] == info["rooms_total"] and info["pct_rooms"] == 1.0
    assert acts.count(SUB_DONE) == info["rooms_total"] and acts[-1] == END
    # the same path without the sub_done actions visits every room but marks none: failure
    env.reset(seed=2)
    for a in acts:
        if a != SUB_DONE:
            _, r, term, _, info = env.step(a)
    assert term and not info["success"] and r == 0.0
    assert info["rooms_marked"] == 0 and info["pct_rooms"] == 1.0
    # `end` after marking only some rooms fails
    env.reset(seed=2)
    marks = 0
    for a in acts:
        if a == SUB_DONE:
            marks += 1
            if marks == 3:
                break
        env.step(a)
    _, r, term, _, info = env.step(END)
    assert term and not info["success"] and info["rooms_marked"] == 2 and r == 0.0


def test_roomvisit_sub_done_in_seen_room_or_doorway_does_not_count():
    env = make_env("roomvisit", dense_reward=True)
    _, info = env.reset(seed=1)
    assert info["rooms_marked"] == 0
    _, r1, _, _, info = env.step(SUB_DONE)
    assert info["rooms_marked"] == 1 and r1 > 0
    _, r2, term, _, info = env.step(SUB_DONE)
    assert info["rooms_marked"] == 1 and r2 < 0 and not term
    # walk the expert path until the agent stands in a doorway, then sub_done there
    acts, _ = _roomvisit_expert_actions(env, 1)
    env.reset(seed=1)
    lv = env.unwrapped
    for a in acts:
        if a == SUB_DONE:
            continue
        env.step(a)
        if lv.room_of(lv.agent_pos) is None:
            break
    assert lv.grid.get(*lv.agent_pos).type == "door"
    before = len(lv.marked_rooms)
    _, _, _, _, info = env.step(SUB_DONE)
    assert info["rooms_marked"] == before


def test_sub_done_elsewhere_is_a_noop():
    env = make_env("objectnav")
    env.reset(seed=0)
    lv = env.unwrapped
    pose = (tuple(lv.agent_pos), lv.agent_dir)
    obs, r, term, trunc, info = env.step(SUB_DONE)
    assert (tuple(lv.agent_pos), lv.agent_dir) == pose and not term and r == 0.0 and obs["step"] == 1


@pytest.mark.parametrize("task", HELDOUT_TASKS)
def test_heldout_families_success_rules(task):
    env = make_env(task)
    for seed in range(3):
        drive_to_end(env, seed)
        _, r, term, _, info = env.step(END)
        assert info["success"] and r == 10.0
        env.reset(seed=seed)  # `end` at the start fails (never facing a target / never in the target room)
        _, r, term, _, info = env.step(END)
        assert term and not info["success"] and r == 0.0


def test_localref_is_judged_from_the_start_pose():
    env = make_env("objectnav_localref")
    for seed in range(10):
        obs, _ = env.reset(seed=seed)
        lv = env.unwrapped
        (ax, ay), d = lv.start_pose
        fx, fy = ((1, 0), (0, 1), (-1, 0), (0, -1))[d]
        for t in lv.targets:
            v = (t.cur_pos[0] - ax, t.cur_pos[1] - ay)
            dot_f, dot_r = v[0] * fx + v[1] * fy, v[0] * -fy + v[1] * fx
            ok = {"front": dot_f > 0, "behind": dot_f < 0, "left": dot_r < 0, "right": dot_r > 0}
            assert ok[lv.target_desc.loc]
        # objects of the same colour and type on the other side do not count
        others = [o for o in objects(lv) if (o.type, o.color) == (lv.target_desc.type, lv.target_desc.color)
                  and not any(o is t for t in lv.targets)]
        for o in others:
            env.reset(seed=seed)
            if face(env.unwrapped, o):
                assert not env.step(END)[4]["success"]


def test_affordance_targets_every_object_of_the_type():
    env = make_env("objectnav_affordance")
    for seed in range(10):
        env.reset(seed=seed)
        lv = env.unwrapped
        kinds = {t.type for t in lv.targets}
        assert len(kinds) == 1
        assert len(lv.targets) == sum(o.type in kinds for o in objects(lv))
        phrase = env.goal.split(" ", 1)[1]
        assert any(phrase.endswith(p) for p in L.AFFORDANCES[kinds.pop()])


def test_roomnav_end_inside_target_room():
    env = make_env("roomnav")
    for seed in range(5):
        env.reset(seed=seed)
        lv = env.unwrapped
        assert lv.room_of(lv.agent_pos) != lv.target_room
        # put the agent in another (non-target) room: failure; in the target room: success
        other = [r for r in range(lv.num_rooms) if r != lv.target_room]
        cell = next(c for r in other for c in lv.room_cells(r) if lv.grid.get(*c) is None)
        lv.agent_pos = cell
        assert not env.step(END)[4]["success"]
        env.reset(seed=seed)
        cell = next(c for c in lv.room_cells(lv.target_room) if lv.grid.get(*c) is None)
        lv.agent_pos = cell
        _, r, _, _, info = env.step(END)
        assert info["success"] and r == 10.0


@pytest.mark.parametrize("task", ["objectnav", "pickup", "roomvisit"])
def test_truncation_at_max_steps(task):
    env = make_env(task)
    env.reset(seed=0)
    for i in range(env.max_steps):
        _, r, term, trunc, info = env.step(LEFT)
        assert not term and r == 0.0 and not info["success"]
        assert trunc == (i == env.max_steps - 1)
    with pytest.raises(RuntimeError):
        env.step(LEFT)


def test_toggle_opens_doors_but_not_boxes():
    env = make_env("objectnav")
    for seed in range(20):
        env.reset(seed=seed)
        lv = env.unwrapped
        boxes = [o for o in objects(lv) if o.type == "box"]
        if boxes and face(lv, boxes[0]):
            env.step(TOGGLE)
            assert lv.grid.get(*boxes[0].cur_pos) is boxes[0]
            break
    else:
        pytest.fail("no box found")
    env.reset(seed=0)
    lv = env.unwrapped
    door = next(c for c in lv.grid.grid if c is not None and c.type == "door")
    assert not door.is_open
    x, y = door.cur_pos
    for d, (dx, dy) in enumerate(((1, 0), (0, 1), (-1, 0), (0, -1))):
        if lv.grid.get(x - dx, y - dy) is None and lv.room_of((x - dx, y - dy)) is not None:
            lv.agent_pos, lv.agent_dir = (x - dx, y - dy), d
            break
    env.step(MOVE)
    assert tuple(lv.agent_pos) != (x, y)  # closed doors block
    env.step(TOGGLE)
    assert door.is_open
    env.step(MOVE)
    assert tuple(lv.agent_pos) == (x, y)


# ---------------------------------------------------------------------------------------------- dense reward
def test_dense_reward_is_progress_plus_success():
    env = make_env("objectnav", dense_reward=True)
    env.reset(seed=1)
    lv = env.unwrapped
    d0 = bfs_distances(lv, lv.goal_cells())[tuple(int(v) for v in lv.agent_pos)]
    acts = drive_to_end(make_env("objectnav"), 1)
    env.reset(seed=1)
    total = sum(env.step(a)[1] for a in acts)
    _, r, _, _, info = env.step(END)
    assert info["success"] and r == pytest.approx(10.0)
    assert total == pytest.approx(0.1 * d0)
    sparse = make_env("objectnav")
    sparse.reset(seed=1)
    assert sum(sparse.step(a)[1] for a in acts) == 0.0

    env = make_env("pickup", dense_reward=True)
    acts = drive_to_end(make_env("pickup"), 0)
    env.reset(seed=0)
    rs = [env.step(a)[1] for a in acts]
    assert acts[-1] == PICKUP and rs[-1] == pytest.approx(1.0)
    assert env.step(DROP)[1] == pytest.approx(-1.0)


# ---------------------------------------------------------------------------------------------- rendering
@pytest.mark.parametrize("task,emb,tile", [("objectnav", "sim", 8), ("pickup", "sim", 4),
                                           ("roomvisit", "sim", 8), ("objectnav", "sim_locobot", 8)])
def test_fast_renderer_matches_minigrid(task, emb, tile):
    env = make_env(task, embodiment=emb, render_tile=tile)
    lv = env.unwrapped
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    side = 7 * tile
    for i in range(300):
        base = lv.agent_dir
        lv.agent_dir = (base + env.pan) % 4  # sim_locobot's camera may be panned off the base heading
        ref = lv.get_pov_render(tile)  # what RGBImgPartialObsWrapper returns
        lv.agent_dir = base
        if emb == "sim_locobot":
            assert ref.shape == (5 * tile, 5 * tile, 3)
            idx = (np.arange(side) * 5 * tile) // side
            ref = ref[idx][:, idx]
        assert obs["rgb"].shape == (side, side, 3)
        assert np.array_equal(obs["rgb"], ref), i
        obs, _, term, trunc, _ = env.step(int(rng.choice([0, 0, 0, 1, 2, 3, 4, 5])))
        if term or trunc:
            obs, _ = env.reset(seed=i)


def test_sim_locobot_embodiment():
    env = make_env("objectnav", embodiment="sim_locobot")
    assert env.unwrapped.agent_view_size == 5
    for s in range(3):
        obs, _ = env.reset(seed=s)
        doors = [c for c in env.unwrapped.grid.grid if c is not None and c.type == "door"]
        assert doors and all(d.is_open for d in doors)  # toggle is unavailable, so doors start open
    lv = env.unwrapped
    assert face(lv, objects(lv)[0])
    for a in (PICKUP, TOGGLE, DROP, SUB_DONE):
        obs, r, term, _, _ = env.step(a)
        assert obs["in_hand"] == 0 and not term  # nothing is ever picked up
    # pickup/dropoff are reinterpreted as camera pan (look_left/look_right): the base does not turn, the view does
    pos, heading = tuple(lv.agent_pos), lv.agent_dir
    centred = env.step(LEFT)[0]["rgb"]
    env.step(RIGHT)
    views = {}
    for a, pan in ((PICKUP, -1), (PICKUP, -1), (DROP, 0), (DROP, 1), (DROP, 1)):  # clamped at +-90 degrees
        obs = env.step(a)[0]
        assert env.pan == pan and lv.agent_dir == heading and tuple(lv.agent_pos) == pos
        views[pan] = obs["rgb"]
    assert np.array_equal(views[-1], centred), "look_left must show what rotate_left shows"
    assert not np.array_equal(views[0], views[1])
    env.reset(seed=1)
    assert env.pan == 0, "every episode starts with the camera centred"
    for task in ("pickup", "fetch", "roomvisit"):
        with pytest.raises(ValueError):
            make_env(task, embodiment="sim_locobot")
    for task in HELDOUT_TASKS:
        make_env(task, embodiment="sim_locobot").reset(seed=0)
