"""AI2-THOR backend against the real ai2thor 5.0.0 Controller and our fake Unity (tests/fake_thor_unity.py):
the exact action messages of the 20 Stretch actions, both camera frames, CHORES success on scripted metadata,
resets, data errors and a Unity process that dies. These check the wiring, not the simulation."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest

from fake_thor_unity import LIFT_OFFSET, manip_pattern, nav_pattern
from flare_policy.bundle import CameraSpec, flare_camera
from flare_policy.embodiments import STRETCH_ACTIONS
from flare_policy.preprocess import prepare_frame
from flare_training.envs import thor_tasks as T
from flare_training.envs.thor import (ThorControllerError, ThorEnv, ThorSettings, action_messages,
                                      action_success, controller_kwargs)
from thor_fixtures import APPLE, HOUSE, MUG, fake_build, logged_actions, make_data

CAMS = [flare_camera("raw_navigation_camera", augment_crop=False),
        flare_camera("raw_manipulation_camera", augment_crop=False)]
A = {name: i for i, name in enumerate(STRETCH_ACTIONS)}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    # ai2thor writes ~/.ai2thor (logs, releases) and maps CUDA_VISIBLE_DEVICES to a Vulkan device
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)


def open_env(tmp_path, task="objectnav", scenario=None, cameras=CAMS, train_eps=None, **settings):
    specs, houses = make_data(tmp_path / "data", task, train_eps=train_eps)
    exe, log = fake_build(tmp_path / "build", scenario)
    s = ThorSettings(task_specs=str(specs.parent), houses=str(houses), executable=str(exe), server_timeout=3,
                     **settings)
    return ThorEnv(task, s, cameras), log


def since(log, n):
    """Messages logged after the first n, without the sequence ids ai2thor adds."""
    return [{k: v for k, v in m.items() if k != "sequenceId"} for m in logged_actions(log)[n:]]


def close(a, b, tol=1e-9):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, abs_tol=tol)
    return a == b


R = dict(renderImageSynthesis=False)
ARM = dict(returnToStart=True, speed=1, **R)


def test_twenty_actions_send_flares_messages(tmp_path):
    env, log = open_env(tmp_path)
    try:
        env.reset(seed=0)
        # the fake's arm starts at lift 0.3, extension 0, wrist yaw 0; MoveArm targets are absolute
        expected = [
            ("move_ahead", [dict(action="MoveAheadQuick", moveMagnitude=0.2, **R)]),
            ("rotate_right", [dict(action="RotateRightQuick", degrees=30, **R)]),
            ("rotate_left", [dict(action="RotateRightQuick", degrees=-30, **R)]),
            ("move_back", [dict(action="MoveBackQuick", moveMagnitude=0.2, **R)]),
            ("sub_done", []),
            ("rotate_left_small", [dict(action="RotateRightQuick", degrees=-6.0, **R)]),
            ("rotate_right_small", [dict(action="RotateRightQuick", degrees=6.0, **R)]),
            ("pickup", [dict(action="PickupObject", **R)]),
            ("move_arm_in", [dict(action="MoveArm", position=dict(x=0.0, y=0.3, z=-0.1), **ARM)]),
            ("move_arm_out", [dict(action="MoveArm", position=dict(x=0.0, y=0.3, z=0.1), **ARM)]),
            ("move_arm_up", [dict(action="MoveArm", position=dict(x=0.0, y=0.4, z=0.1), **ARM)]),
            ("move_arm_down", [dict(action="MoveArm", position=dict(x=0.0, y=0.3, z=0.1), **ARM)]),
            ("wrist_open", [dict(action="RotateWristRelative", yaw=-10, **ARM)]),
            ("wrist_close", [dict(action="RotateWristRelative", yaw=10, **ARM)]),
            ("move_arm_down_small", [dict(action="MoveArm", position=dict(x=0.0, y=0.28, z=0.1), **ARM)]),
            ("move_arm_in_small", [dict(action="MoveArm", position=dict(x=0.0, y=0.28, z=0.08), **ARM)]),
            ("move_arm_out_small", [dict(action="MoveArm", position=dict(x=0.0, y=0.28, z=0.1), **ARM)]),
            ("move_arm_up_small", [dict(action="MoveArm", position=dict(x=0.0, y=0.3, z=0.1), **ARM)]),
            ("dropoff", [dict(action="ReleaseObject", **R), dict(action="AdvancePhysicsStep", simSeconds=2, **R)]),
            ("end", [dict(action="GetVisibleObjects", maxDistance=2.0, **R)]),  # the ObjectNav judge
        ]
        assert sorted(name for name, _ in expected) == sorted(STRETCH_ACTIONS)
        for name, msgs in expected:
            n = len(logged_actions(log))
            env.step(A[name])
            got = since(log, n)
            assert len(got) == len(msgs) and all(close(g, m) for g, m in zip(got, msgs)), (name, got)
    finally:
        env.close()


def test_wrist_clamps_and_reported_success():
    def meta(yaw=0.0, lift=0.3, ext=0.0, x=0.0):
        j0 = {"rootRelativePosition": {"x": 0.0, "y": lift + LIFT_OFFSET, "z": 0.0}}
        jw = {"rootRelativePosition": {"x": 0.0, "y": lift, "z": ext},
              "rootRelativeRotation": {"x": 0.0, "y": 1.0, "z": 0.0, "w": yaw}}
        return {"arm": {"joints": [j0, jw]}, "agent": {"position": {"x": x, "y": 0.9, "z": 0.0},
                                                       "rotation": {"y": 0.0}}}
    # STRETCH_WRIST_BOUND_1 = 75: closing stops there; opening stops at BOUND_2 + 360 = 100
    assert action_messages("wrist_close", meta(70))[0]["yaw"] == 5
    assert action_messages("wrist_close", meta(75))[0]["yaw"] == 0
    assert action_messages("wrist_open", meta(95))[0]["yaw"] == -5
    assert action_messages("wrist_open", meta(-40))[0]["yaw"] == -10
    with pytest.raises(ValueError, match="handled by the task"):
        action_messages("end", meta())
    # pickup always reports failure, dropoff success; arm actions need a change beyond 5 mm; base: no collision
    assert action_success("pickup", meta(), meta(), "") is False
    assert action_success("dropoff", meta(), meta(), "") is True
    assert action_success("move_arm_up", meta(), meta(lift=0.304), "") is False
    assert action_success("move_arm_up", meta(), meta(lift=0.4), "") is True
    assert action_success("move_ahead", meta(), meta(), "Agent collided with Wall") is False
    assert action_success("move_ahead", meta(), meta(), "") is True


def test_both_cameras_decode_exactly(tmp_path):
    small = [CameraSpec("raw_navigation_camera", (24, 42), (24, 40)),
             CameraSpec("raw_manipulation_camera", (24, 42), (24, 40))]
    env, log = open_env(tmp_path, cameras=CAMS)
    try:
        obs, _ = env.reset(seed=0)
        obs, *_ = env.step(A["move_ahead"])
        seq = logged_actions(log)[-1]["sequenceId"]
        assert obs["rgb"].shape == (2, 224, 384, 3) and obs["rgb"].dtype == np.uint8
        # 396x224 frames (RGBA, bottom row first on the wire) cropped round(396 * 6 / 396) = 6 px per side
        np.testing.assert_array_equal(obs["rgb"][0], nav_pattern(224, 396, seq)[:, 6:390])
        np.testing.assert_array_equal(obs["rgb"][1], manip_pattern(224, 396, seq)[:, 6:390])
        assert not np.array_equal(obs["rgb"][0], obs["rgb"][1])
        env.cameras = small  # a bundle's smaller camera spec: the same frames through prepare_frame
        obs = env._obs()
        assert obs["rgb"].shape == (2, 24, 40, 3)
        np.testing.assert_array_equal(obs["rgb"][1], prepare_frame(manip_pattern(224, 396, seq)[:, 6:390], small[1]))
        env.cameras = CAMS[:1]
        assert env._obs()["rgb"].shape == (224, 384, 3)  # one camera: no camera axis (as mini-CHORES)
    finally:
        env.close()


def test_objectnav_success_resets_and_truncation(tmp_path):
    env, log = open_env(tmp_path, max_steps=4)
    try:
        obs, info = env.reset(seed=0)  # train spec 0: start (0, 0.9, 0) facing +z, the mug 1.2 m ahead
        assert obs["goal"].endswith("a mug") and obs["step"] == 0 and info["expert_length"] == 3
        obs, r, term, trunc, info = env.step(A["end"])
        assert (r, term, trunc, info["success"]) == (10.0, True, False, True)
        with pytest.raises(RuntimeError, match="finished episode"):
            env.step(A["move_ahead"])
        n = len(logged_actions(log))
        obs, _ = env.reset(seed=1)  # spec 1: same house, facing +x: the mug is out of view
        msgs = since(log, n)
        # nav task, same house: no rebuild; materials randomised with p 0.8 on train episodes
        assert [m["action"] for m in msgs][1:] == ["Teleport"]
        assert msgs[0]["action"] in ("RandomizeMaterials", "ResetMaterials")
        assert close(msgs[1], dict(action="Teleport", position=dict(x=0.0, y=0.9, z=0.0),
                                   rotation=dict(x=0, y=90.0, z=0), **R))
        obs, r, term, trunc, info = env.step(A["end"])
        assert (r, term, info["success"]) == (0.0, True, False)
        obs, _ = env.reset(seed=2)  # train seeds cycle through the 2 specs: seed 2 = spec 0
        goal0 = obs["goal"]
        for t in range(4):
            obs, r, term, trunc, info = env.step(A["rotate_left_small"])
        assert (term, trunc, obs["step"]) == (False, True, 4)  # max_steps
        assert env.reset(seed=2)[0]["goal"] == goal0  # same seed, same episode
        n = len(logged_actions(log))
        obs, _ = env.reset(seed=1_000_000_000)  # the first val seed plays val/ spec 0, in the val house file
        assert env.split == "val" and env.max_steps == 4
        actions = [m["action"] for m in since(log, n)]
        assert "CreateHouse" in actions and "ResetMaterials" in actions and "RandomizeMaterials" not in actions
    finally:
        env.close()


def test_pickup_and_fetch_success_from_held_objects(tmp_path):
    env, log = open_env(tmp_path, task="pickup", train_eps=[{"start": (0.0, 0.9, 0.5, 0.0)}])
    try:
        obs, _ = env.reset(seed=0)
        assert obs["in_hand"] == 0 and obs["goal"].split()[-1] == "mug"
        obs, r, term, trunc, info = env.step(A["pickup"])
        assert obs["in_hand"] == 1 and info["last_action_success"] is False  # FLaRe reports pickup as failed
        obs, r, term, trunc, info = env.step(A["end"])
        assert (r, info["success"]) == (10.0, True)
        n = len(logged_actions(log))
        env.reset(seed=0)  # manipulation: the house is rebuilt every episode
        assert "CreateHouse" in [m["action"] for m in since(log, n)]
    finally:
        env.close()
    fetch_apple = T.ThorTaskSpec("FetchType", 0, {}, 0.0, {"synsets": ["apple.n.01"],
                                                           "broad_synset_to_object_ids": {"apple.n.01": [APPLE]}})
    assert not T.held_target_success(fetch_apple, {"heldObjects": [MUG]})
    assert T.held_target_success(fetch_apple, {"heldObjects": [MUG, APPLE]})
    assert T.goal_text(fetch_apple, random.Random(0)).endswith("that apple")


def test_roomvisit_marks_rooms_with_sub_done(tmp_path):
    env, log = open_env(tmp_path, task="roomvisit")
    try:
        obs, info = env.reset(seed=0)
        assert obs["goal"] == ("go to all 2 rooms in the house. indicate when you have seen a new room and "
                               "when you are done")
        obs, r, term, trunc, info = env.step(A["sub_done"])
        assert info["last_action_success"] and info["rooms_marked"] == 1
        obs, r, term, trunc, info = env.step(A["sub_done"])  # the same room again
        assert not info["last_action_success"] and info["rooms_marked"] == 1
        for _ in range(3):
            env.step(A["rotate_right"])  # face +x
        for _ in range(6):
            obs, r, term, trunc, info = env.step(A["move_ahead"])  # x = 1.2: the second room
        assert info["pct_rooms"] == 1.0
        obs, r, term, trunc, info = env.step(A["sub_done"])
        assert info["rooms_marked"] == 2
        obs, r, term, trunc, info = env.step(A["end"])
        assert (r, info["success"]) == (10.0, True)
    finally:
        env.close()
    assert T.room_of(HOUSE, {"x": 0.5, "z": 0.0}) == "room|1" and T.room_of(HOUSE, {"x": 5.0, "z": 0.0}) is None
    assert not T.roomvisit_success(["room|1"], HOUSE)
    spec = T.ThorTaskSpec("ObjectNavType", 0, {}, 0.0, {"synsets": ["mug.n.04"],
                                                        "broad_synset_to_object_ids": {"mug.n.04": [MUG]}})
    assert T.objectnav_success(spec, [APPLE, MUG]) and not T.objectnav_success(spec, [APPLE])


def test_unity_that_dies_mid_episode_gives_a_clear_error(tmp_path):
    env, log = open_env(tmp_path, scenario={"objects": [], "die_after": 3, "exit_code": 134})
    try:
        env.reset(seed=0)
        env.step(A["move_ahead"])
        env.step(A["rotate_right"])
        with pytest.raises(ThorControllerError, match=r"'MoveAheadQuick'.*exited with code 134.*unity\.log"):
            env.step(A["move_ahead"])  # the third agent action is never answered
        with pytest.raises(ThorControllerError, match="exited with code 134"):
            env.step(A["move_ahead"])  # and nothing is sent to a dead process
    finally:
        env.close()


def test_missing_data_and_build_name_what_to_get(tmp_path):
    specs, houses = make_data(tmp_path / "data", "objectnav")
    exe, _ = fake_build(tmp_path / "build")
    cams = CAMS
    with pytest.raises(T.ThorDataError, match="download_training_data"):
        ThorEnv("objectnav", ThorSettings(task_specs=str(tmp_path / "nope"), houses=str(houses),
                                          executable=str(exe)), cams).reset(seed=0)
    with pytest.raises(T.ThorDataError, match="download_objaverse_houses"):
        ThorEnv("objectnav", ThorSettings(task_specs=str(specs), houses=str(tmp_path / "nohouses"),
                                          executable=str(exe)), cams).reset(seed=0)
    with pytest.raises(T.ThorDataError, match="no PickupType episodes"):
        ThorEnv("pickup", ThorSettings(task_specs=str(specs), houses=str(houses), executable=str(exe)),
                cams).reset(seed=0)
    with pytest.raises(T.ThorDataError, match="not an executable file.*966bd775"):
        controller_kwargs(ThorSettings(executable=str(tmp_path / "no-unity")))
    with pytest.raises(ValueError, match="embodiment 'locobot'"):
        ThorEnv("objectnav", ThorSettings(task_specs=str(specs), houses=str(houses)), cams, embodiment="locobot")


def test_headless_display_boundary(tmp_path):
    exe, _ = fake_build(tmp_path / "build")
    # a local CloudRendering build never opens X, but ai2thor launches any local build as Linux64 and puts
    # DISPLAY=x_display into its environment: a placeholder gets past that
    assert controller_kwargs(ThorSettings(executable=str(exe)))["x_display"] == ":0"
    with pytest.raises(T.ThorDataError, match="needs an X display"):
        controller_kwargs(ThorSettings(executable=str(exe), executable_platform="Linux64"))
    import ai2thor.platform

    kw = controller_kwargs(ThorSettings())  # no local build: ai2thor fetches FLaRe's commit for CloudRendering
    assert kw["commit_id"] == "966bd7758586e05d18f6181f459c0e90ba318bec"
    assert kw["platform"] is ai2thor.platform.CloudRendering and "x_display" not in kw
    assert kw["agentMode"] == "stretch" and kw["fieldOfView"] == 59 and kw["server_timeout"] == 1200
    assert (kw["width"], kw["height"]) == (396, 224) and kw["visibilityDistance"] == pytest.approx(0.8673349)
