"""Executor cores and backends without ROS: FLaRe action -> motion mapping, limits, grasp heuristic, halting,
LoCoBot odometry-closed base motions, stretch_body and stretch_driver backends (hardware faked at the
driver / library boundary only)."""
from __future__ import annotations

import math
import sys
import threading
import time

import pytest

from flare_bringup.executors import (
    GRIPPER_APERTURE, JOINT_ARM, JOINT_LIFT, JOINT_WRIST_YAW, DriverUnavailable, JointLimit, LocobotExecutor,
    LocobotParams, StretchExecutor, StretchParams, plan_motion,
)
from flare_bringup.executors.fake import FakeLocobotDriver, FakeStretchDriver, SimClock
from flare_policy.embodiments import EMBODIMENTS, STRETCH_ACTIONS

DEG = math.pi / 180


def test_no_torch_or_rclpy_import():
    import subprocess

    code = ("import sys, flare_bringup.executors, flare_bringup.executors.fake, "
            "flare_bringup.executors.stretch_body_backend, flare_bringup.executors.stretch_driver_backend, "
            "flare_bringup.executors.locobot_backend; "
            "print('torch' in sys.modules, 'rclpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# --------------------------------------------------------------------------------------------- Stretch
START = {JOINT_LIFT: 0.5, JOINT_ARM: 0.2, JOINT_WRIST_YAW: 0.3, GRIPPER_APERTURE: 0.05}

# action -> expected driver call (FLaRe magnitudes; REP 103: right = negative yaw; wrist_open = -10 deg)
EXPECTED = {
    "move_ahead": ("translate_base", 0.2),
    "move_back": ("translate_base", -0.2),
    "rotate_right": ("rotate_base", -30 * DEG),
    "rotate_left": ("rotate_base", 30 * DEG),
    "rotate_right_small": ("rotate_base", -6 * DEG),
    "rotate_left_small": ("rotate_base", 6 * DEG),
    "move_arm_up": ("move_joint_to", JOINT_LIFT, 0.6),
    "move_arm_down": ("move_joint_to", JOINT_LIFT, 0.4),
    "move_arm_up_small": ("move_joint_to", JOINT_LIFT, 0.52),
    "move_arm_down_small": ("move_joint_to", JOINT_LIFT, 0.48),
    "move_arm_out": ("move_joint_to", JOINT_ARM, 0.3),
    "move_arm_in": ("move_joint_to", JOINT_ARM, 0.1),
    "move_arm_out_small": ("move_joint_to", JOINT_ARM, 0.22),
    "move_arm_in_small": ("move_joint_to", JOINT_ARM, 0.18),
    "wrist_open": ("move_joint_to", JOINT_WRIST_YAW, 0.3 - 10 * DEG),
    "wrist_close": ("move_joint_to", JOINT_WRIST_YAW, 0.3 + 10 * DEG),
    "pickup": ("gripper", "close"),
    "dropoff": ("gripper", "open"),
    "end": None,
    "sub_done": None,
}


def _calls(drv):
    return [c for c in drv.calls if c[0] not in ("start", "close")]


def _same(call, expected):
    if expected is None:
        return call is None
    if call is None or call[0] != expected[0] or len(call) != len(expected):
        return False
    return all(math.isclose(a, b, abs_tol=1e-9) if isinstance(b, float) else a == b
               for a, b in zip(call[1:], expected[1:]))


def test_mapping_covers_all_20_actions_in_flare_order():
    assert len(STRETCH_ACTIONS) == 20 and set(EXPECTED) == set(STRETCH_ACTIONS)


@pytest.mark.parametrize("action", STRETCH_ACTIONS)
def test_each_action_maps_to_the_right_motion_and_magnitude(action):
    drv = FakeStretchDriver(positions=START, object_width_m=0.03)
    ex = StretchExecutor(drv)
    out = ex.execute(action)
    calls = _calls(drv)
    assert len(calls) == (0 if EXPECTED[action] is None else 1), calls
    assert _same(calls[0] if calls else None, EXPECTED[action]), (calls, EXPECTED[action])
    assert out.success, out.message


def test_end_and_sub_done_never_move_even_when_everything_else_would():
    drv = FakeStretchDriver(positions=START)
    ex = StretchExecutor(drv)
    for a in ("end", "sub_done", "end"):
        out = ex.execute(a)
        assert out.success and "no motion" in out.message
    assert _calls(drv) == []


def test_joint_targets_are_absolute_from_current_positions():
    drv = FakeStretchDriver(positions=START)
    ex = StretchExecutor(drv)
    for _ in range(3):
        assert ex.execute("move_arm_up").success
    assert math.isclose(drv.positions[JOINT_LIFT], 0.8)
    assert [round(c[2], 6) for c in _calls(drv)] == [0.6, 0.7, 0.8]


def test_targets_are_clipped_to_limits_and_a_joint_at_its_limit_refuses():
    drv = FakeStretchDriver(positions={JOINT_LIFT: 1.05, JOINT_ARM: 0.01, JOINT_WRIST_YAW: 0.0},
                            limits={JOINT_LIFT: JointLimit(0.0, 1.1), JOINT_ARM: JointLimit(0.0, 0.5),
                                    JOINT_WRIST_YAW: JointLimit(-0.1, 3.0)})
    ex = StretchExecutor(drv)
    out = ex.execute("move_arm_up")
    assert out.success and "clipped" in out.message
    assert _same(_calls(drv)[-1], ("move_joint_to", JOINT_LIFT, 1.1))
    n = len(_calls(drv))
    out = ex.execute("move_arm_up")  # already at the upper limit: nothing sent, failure reported
    assert not out.success and "upper limit" in out.message and len(_calls(drv)) == n
    assert ex.execute("move_arm_in").success  # 0.01 - 0.1 -> clipped to 0.0
    assert _same(_calls(drv)[-1], ("move_joint_to", JOINT_ARM, 0.0))
    assert not ex.execute("move_arm_in_small").success
    assert ex.execute("wrist_open").success  # 0 - 10 deg -> clipped to -0.1 rad
    assert _same(_calls(drv)[-1], ("move_joint_to", JOINT_WRIST_YAW, -0.1))
    assert not ex.execute("wrist_open").success


def test_default_limits_apply_when_the_backend_reports_none():
    drv = FakeStretchDriver(positions={JOINT_LIFT: 0.95})
    drv.limits = {}
    ex = StretchExecutor(drv, default_limits={JOINT_LIFT: JointLimit(0.2, 1.0)})
    assert ex.execute("move_arm_up").success
    assert _same(_calls(drv)[-1], ("move_joint_to", JOINT_LIFT, 1.0))


def test_plan_motion_is_pure_and_refuses_unknown_state():
    from flare_bringup.executors import Refused

    p = StretchParams()
    m = plan_motion("move_arm_out", p, {JOINT_ARM: 0.1}, {JOINT_ARM: JointLimit(0, 0.5)})
    assert (m.kind, m.joint, round(m.value, 6)) == ("joint", JOINT_ARM, 0.2)
    with pytest.raises(Refused, match="unknown"):
        plan_motion("move_arm_out", p, {}, {})
    with pytest.raises(Refused, match="unknown action"):
        plan_motion("fly", p, {}, {})


def test_wrist_sign_parameter_flips_wrist_open():
    drv = FakeStretchDriver(positions=START)
    StretchExecutor(drv, StretchParams(wrist_yaw_sign=-1.0)).execute("wrist_open")
    assert _same(_calls(drv)[-1], ("move_joint_to", JOINT_WRIST_YAW, 0.3 + 10 * DEG))


def test_magnitudes_are_parameters():
    drv = FakeStretchDriver(positions=START)
    ex = StretchExecutor(drv, StretchParams(move_m=0.1, rotate_deg=45.0))
    ex.execute("move_back")
    ex.execute("rotate_right")
    assert _same(_calls(drv)[0], ("translate_base", -0.1))
    assert _same(_calls(drv)[1], ("rotate_base", -45 * DEG))


@pytest.mark.parametrize("bad", [dict(move_m=0.0), dict(rotate_deg=float("nan")), dict(wrist_yaw_sign=0.5),
                                 dict(gripper_close_pct=40.0)])
def test_invalid_parameters_are_rejected(bad):
    with pytest.raises(ValueError):
        StretchParams(**bad).validate()


def test_pickup_heuristic_grasp_and_dropoff():
    drv = FakeStretchDriver(positions=START, object_width_m=0.03)
    ex = StretchExecutor(drv)
    out = ex.execute("pickup")
    assert out.success and out.in_hand and "object held" in out.message
    out = ex.execute("move_ahead")
    assert out.in_hand  # in-hand persists across other actions
    out = ex.execute("dropoff")
    assert out.success and not out.in_hand
    drv.object_width_m = 0.0  # fingers close completely: nothing held
    out = ex.execute("pickup")
    assert not out.success and not out.in_hand and "nothing grasped" in out.message


def test_grasp_effort_threshold():
    drv = FakeStretchDriver(positions=START, object_width_m=0.03)  # fake reports effort -60 when holding
    assert not StretchExecutor(drv, StretchParams(grasp_min_effort=80.0)).execute("pickup").in_hand
    assert StretchExecutor(drv, StretchParams(grasp_min_effort=50.0)).execute("pickup").in_hand


def test_unknown_action_is_refused_without_motion():
    drv = FakeStretchDriver()
    out = StretchExecutor(drv).execute("teleport")
    assert not out.success and "unknown action" in out.message and _calls(drv) == []


def test_halt_interrupts_a_running_motion_quickly():
    drv = FakeStretchDriver(motion_time_s=5.0)
    ex = StretchExecutor(drv)
    res = {}
    t = threading.Thread(target=lambda: res.setdefault("out", ex.execute("move_ahead")))
    t0 = time.monotonic()
    t.start()
    time.sleep(0.1)
    ex.halt("stop command")
    t.join(2.0)
    assert time.monotonic() - t0 < 1.5
    out = res["out"]
    assert not out.success and "interrupted: stop command" in out.message
    assert ("stop",) in drv.calls
    assert drv.base == [0.0, 0.0, 0.0]  # the interrupted move never completed


def test_next_command_after_halt_runs_normally():
    drv = FakeStretchDriver()
    ex = StretchExecutor(drv)
    ex.halt("stop command")
    out = ex.execute("move_ahead")
    assert out.success, out.message


def test_runstopped_driver_interrupts_motion():
    drv = FakeStretchDriver()
    drv.runstopped = True
    out = StretchExecutor(drv).execute("rotate_left")
    assert not out.success and "interrupted" in out.message


def test_driver_errors_become_failed_outcomes():
    drv = FakeStretchDriver(fail_actions=("joint",))
    out = StretchExecutor(drv).execute("move_arm_up")
    assert not out.success and "failed" in out.message


# --------------------------------------------------------------------------------------------- LoCoBot
def _loco(**kw):
    clock = SimClock()
    drv = FakeLocobotDriver(clock=clock, **kw)
    return LocobotExecutor(drv, LocobotParams()), drv


def test_locobot_move_ahead_stops_at_measured_distance_with_twists_at_10hz_or_more():
    ex, drv = _loco()
    out = ex.execute("move_ahead")
    assert out.success, out.message
    assert drv.pose[0] == pytest.approx(0.25, abs=0.012) and abs(drv.pose[1]) < 1e-6
    moving = [t for t, vx, wz in drv.twists if vx != 0 or wz != 0]
    gaps = [b - a for a, b in zip(moving, moving[1:])]
    assert moving and max(gaps) <= 0.1 + 1e-9  # republished at >= 10 Hz
    assert drv.twists[-1][1:] == (0.0, 0.0)  # ends with a zero Twist
    assert all(vx >= 0 and wz == 0 for _, vx, wz in drv.twists)


@pytest.mark.parametrize("action,sign", [("rotate_left", 1), ("rotate_right", -1)])
def test_locobot_rotations_follow_rep103(action, sign):
    ex, drv = _loco()
    out = ex.execute(action)
    assert out.success, out.message
    assert drv.pose[2] == pytest.approx(sign * 30 * DEG, abs=1.5 * DEG)
    assert all(vx == 0 and wz * sign >= 0 for _, vx, wz in drv.twists)


def test_locobot_masked_actions_are_refused_without_motion():
    emb = EMBODIMENTS["locobot"]
    masked = [a for a in STRETCH_ACTIONS if not emb.is_allowed(a)]
    assert "move_back" in masked and "pickup" in masked
    for a in masked:
        ex, drv = _loco()
        out = ex.execute(a)
        assert not out.success and "masked" in out.message
        assert drv.twists == [] and drv.calls == []


def test_locobot_small_rotations_are_camera_tilt():
    ex, drv = _loco()
    out = ex.execute("rotate_right_small")  # look_down
    assert out.success and "look_down" in out.message
    assert drv.tilt == pytest.approx(30 * DEG) and drv.twists == []
    assert ex.execute("rotate_right_small").success  # 60 deg down: the limit
    assert not ex.execute("rotate_right_small").success  # beyond the limit: refused
    assert ex.execute("rotate_left_small").success  # look_up
    assert drv.tilt == pytest.approx(30 * DEG)


def test_locobot_without_tilt_interface_refuses_look_actions():
    ex, drv = _loco(tilt=False)
    out = ex.execute("rotate_left_small")
    assert not out.success and "tilt" in out.message


def test_locobot_blocked_base_times_out_and_stops():
    ex, drv = _loco(max_travel_m=0.1)
    out = ex.execute("move_ahead")
    assert not out.success and "timeout" in out.message
    assert drv.twists[-1][1:] == (0.0, 0.0)
    assert drv.pose[0] == pytest.approx(0.1)


def test_locobot_stale_odometry_stops_the_motion():
    ex, drv = _loco(odom_rate_hz=1.0)  # odometry updates once a second: stale after 0.5 s
    out = ex.execute("move_ahead")
    assert not out.success and "stale" in out.message
    assert drv.twists[-1][1:] == (0.0, 0.0)


def test_locobot_end_never_moves():
    ex, drv = _loco()
    assert ex.execute("end").success and drv.twists == []


def test_locobot_params_validation():
    with pytest.raises(ValueError, match="rate_hz"):
        LocobotParams(rate_hz=5.0).validate()


# ------------------------------------------------------------------------------------ stretch_body backend
class _Rec:
    """Records calls to stretch_body's Robot API (the hardware library cannot run without a robot)."""

    def __init__(self, log, name):
        self._log, self._name = log, name
        self.params = {"range_m": [0.0, 1.1] if name == "lift" else [0.0, 0.52]}

    def __getattr__(self, attr):
        def f(*a, **k):
            self._log.append((f"{self._name}.{attr}",) + a)
            return True
        return f


class FakeBodyRobot:
    def __init__(self, startup_ok=True):
        self.log = []
        self.base, self.lift, self.arm = _Rec(self.log, "base"), _Rec(self.log, "lift"), _Rec(self.log, "arm")
        self.end_of_arm = _Rec(self.log, "end_of_arm")
        self.head = _Rec(self.log, "head")
        self.startup_ok = startup_ok
        self.runstop = False
        self.gripper_pct = 20.0

    def startup(self):
        self.log.append(("startup",))
        return self.startup_ok

    def stop(self):
        self.log.append(("robot.stop",))

    def push_command(self):
        self.log.append(("push_command",))

    def wait_command(self, timeout=15.0):
        self.log.append(("wait_command",))
        return True

    def is_homed(self):
        return True

    def get_status(self):
        return {"pimu": {"runstop_event": self.runstop}, "lift": {"pos": 0.5}, "arm": {"pos": 0.2},
                "end_of_arm": {"wrist_yaw": {"pos": 0.1}, "stretch_gripper": {"pos_pct": self.gripper_pct,
                                                                               "effort": -40.0}}}


def _body(robot, **cfg):
    from flare_bringup.executors.stretch_body_backend import BodyBackendConfig, StretchBodyBackend

    b = StretchBodyBackend(BodyBackendConfig(gripper_settle_s=0.05, gripper_timeout_s=0.5, **cfg),
                           robot_factory=lambda: robot)
    b.start()
    return b


def test_body_backend_translate_and_rotate_push_then_wait():
    r = FakeBodyRobot()
    b = _body(r)
    ex = StretchExecutor(b)
    assert ex.execute("move_ahead").success
    assert ex.execute("rotate_right").success
    moves = [c for c in r.log if c[0] not in ("startup",)]
    assert moves[0] == ("base.translate_by", 0.2)
    assert moves[1:3] == [("push_command",), ("wait_command",)]
    assert moves[3][0] == "base.rotate_by" and moves[3][1] == pytest.approx(-30 * DEG)


def test_body_backend_joints_and_gripper():
    r = FakeBodyRobot()
    ex = StretchExecutor(_body(r))
    assert ex.execute("move_arm_up").success
    assert ("lift.move_to", pytest.approx(0.6)) in [(c[0], c[1]) for c in r.log if len(c) > 1]
    assert ex.execute("move_arm_out").success
    assert ("arm.move_to", pytest.approx(0.3)) in [(c[0], c[1]) for c in r.log if len(c) > 1]
    assert ex.execute("wrist_close").success
    assert ("end_of_arm.move_to", "wrist_yaw", pytest.approx(0.1 + 10 * DEG)) in \
        [c for c in r.log if c[0] == "end_of_arm.move_to"]
    r.gripper_pct = 20.0  # fingers stop 20 % open: an object is held
    out = ex.execute("pickup")
    assert ("end_of_arm.move_to", "stretch_gripper", -10.0) in r.log
    assert out.success and out.in_hand
    r.gripper_pct = -5.0  # closed on nothing
    assert not ex.execute("pickup").in_hand
    ex.execute("dropoff")
    assert ("end_of_arm.move_to", "stretch_gripper", 30.0) in r.log


def test_body_backend_limits_runstop_stop_and_close():
    r = FakeBodyRobot()
    b = _body(r)
    assert b.joint_limits()[JOINT_LIFT] == JointLimit(0.0, 1.1)
    assert b.is_ready() == (True, "")
    r.runstop = True
    assert b.is_runstopped() and not b.is_ready()[0]
    out = StretchExecutor(b).execute("move_ahead")
    assert not out.success and "runstop" in out.message
    b.stop()
    assert ("base.translate_by", 0.0) in r.log and ("push_command",) in r.log
    # a held object stays held: stop never commands the gripper (a zero-length move would relax the squeeze)
    assert not [c for c in r.log if "stretch_gripper" in c], r.log
    b.close()
    assert r.log[-1] == ("robot.stop",)


def test_body_backend_lock_held_by_another_process_is_a_clear_error():
    with pytest.raises(DriverUnavailable, match="another process is already using Stretch"):
        _body(FakeBodyRobot(startup_ok=False))


def test_body_backend_without_stretch_body_is_a_clear_error():
    try:  # stretch_body is deliberately not a dependency
        import stretch_body  # noqa: F401,F811
        pytest.skip("stretch_body is installed here")
    except ImportError:
        pass
    from flare_bringup.executors.stretch_body_backend import StretchBodyBackend

    with pytest.raises(DriverUnavailable, match="stretch_body is not installed"):
        StretchBodyBackend().start()


# ----------------------------------------------------------------------------------- stretch_driver backend
def test_driver_goals_one_joint_one_point():
    from flare_bringup.executors.stretch_driver_backend import BASE_ROTATE, BASE_TRANSLATE, build_trajectory, \
        check_goal

    t = build_trajectory(BASE_TRANSLATE, 0.2)
    assert list(t.joint_names) == [BASE_TRANSLATE] and list(t.points[0].positions) == [0.2]
    check_goal(t)
    t.joint_names = [BASE_TRANSLATE, BASE_ROTATE]
    t.points[0].positions = [0.2, 0.1]
    with pytest.raises(ValueError, match="never share"):
        check_goal(t)
    with pytest.raises(ValueError):
        build_trajectory("joint_mobile_base_translation", 0.1)
    with pytest.raises(ValueError):
        build_trajectory(JOINT_LIFT, float("nan"))


def test_driver_joint_states_are_looked_up_by_name():
    from flare_bringup.executors.stretch_driver_backend import limits_from_joint_limits, \
        positions_from_joint_state

    names = ["joint_gripper_finger_left", "joint_head_pan", "joint_arm_l0", "joint_arm_l1", "joint_arm_l2",
             "joint_arm_l3", "joint_lift", "joint_wrist_yaw"]
    pos = [0.1, 9.0, 0.05, 0.05, 0.05, 0.05, 0.7, -0.2]
    p = positions_from_joint_state(names, pos)
    assert p[JOINT_LIFT] == 0.7 and p[JOINT_ARM] == pytest.approx(0.2) and p[JOINT_WRIST_YAW] == -0.2
    assert p[GRIPPER_APERTURE] == pytest.approx(2 * 0.1 * 0.9 * 0.19011)
    p = positions_from_joint_state(["wrist_extension", "joint_lift"], [0.3, 0.4])
    assert p[JOINT_ARM] == 0.3
    lim = limits_from_joint_limits(["joint_lift", "wrist_extension", "joint_head_pan", "joint_wrist_yaw"],
                                   [0.0, 0.0, -4.0, -1.75], [1.1, 0.52, 1.7, 4.0])
    assert lim[JOINT_LIFT] == JointLimit(0.0, 1.1) and lim[JOINT_ARM] == JointLimit(0.0, 0.52)
    assert lim["joint_head_pan"] == JointLimit(-4.0, 1.7)  # the start pose clips the head to these


def test_driver_action_client_without_control_msgs_is_a_clear_error():
    try:
        import control_msgs  # noqa: F401
        pytest.skip("control_msgs is installed here")
    except ImportError:
        pass
    from flare_bringup.executors.stretch_driver_backend import FollowJointTrajectoryClient

    with pytest.raises(DriverUnavailable, match="control_msgs"):
        FollowJointTrajectoryClient(None, "/stretch_controller/follow_joint_trajectory")


# ----------------------------------------------------------------------------------------- start pose
def test_start_pose_retracts_first_aims_the_head_and_opens_the_gripper():
    from flare_policy.protocol import START_POSE

    from flare_bringup.executors.base import JOINT_HEAD_PAN, JOINT_HEAD_TILT

    drv = FakeStretchDriver(positions=dict(START, **{JOINT_LIFT: 1.0, JOINT_ARM: 0.4}))
    ex = StretchExecutor(drv, StretchParams(start_lift_m=0.7))
    ex.in_hand = True
    out = ex.execute(START_POSE)
    assert out.success and not out.in_hand, out
    moves = [c for c in _calls(drv) if c[0] == "move_joint_to"]
    # arm in before the lift moves (nothing swings out at height); head: FLaRe's camera 27 deg down
    assert [m[1] for m in moves] == [JOINT_ARM, JOINT_LIFT, JOINT_WRIST_YAW, JOINT_HEAD_PAN, JOINT_HEAD_TILT]
    assert [m[2] for m in moves] == pytest.approx([0.0, 0.7, 0.0, 0.0, -27 * DEG])
    assert _calls(drv)[-1] == ("gripper", "open")
    assert drv.positions[JOINT_HEAD_TILT] == pytest.approx(-27 * DEG)


def test_start_pose_targets_are_parameters_clipped_to_limits():
    from flare_policy.protocol import START_POSE

    drv = FakeStretchDriver(positions=dict(START), limits={JOINT_LIFT: JointLimit(0.1, 0.9)})
    ex = StretchExecutor(drv, StretchParams(start_lift_m=1.5, start_head_tilt_deg=-40.0, start_arm_m=0.05))
    assert ex.execute(START_POSE).success
    targets = {c[1]: c[2] for c in _calls(drv) if c[0] == "move_joint_to"}
    assert targets[JOINT_LIFT] == pytest.approx(0.9) and targets[JOINT_ARM] == pytest.approx(0.05)
    assert targets["joint_head_tilt"] == pytest.approx(-40 * DEG)


def test_start_pose_failure_and_halt_are_reported_and_stop_moving():
    from flare_policy.protocol import START_POSE

    drv = FakeStretchDriver(positions=dict(START), fail_actions=("joint",))
    out = StretchExecutor(drv).execute(START_POSE)
    assert not out.success and "start_pose failed" in out.message
    assert not [c for c in _calls(drv) if c[0] == "gripper"]  # nothing after the failing joint
    drv = FakeStretchDriver(positions=dict(START), motion_time_s=2.0)
    ex = StretchExecutor(drv)
    threading.Timer(0.1, ex.halt, args=("stop command",)).start()
    t0 = time.monotonic()
    out = ex.execute(START_POSE)
    assert not out.success and "interrupted: stop command" in out.message and time.monotonic() - t0 < 1.5
    assert len([c for c in _calls(drv) if c[0] == "move_joint_to"]) == 1


def test_body_backend_moves_the_head_for_the_start_pose():
    from flare_policy.protocol import START_POSE

    r = FakeBodyRobot()
    assert StretchExecutor(_body(r)).execute(START_POSE).success
    assert ("head.move_to", "head_tilt", pytest.approx(-27 * DEG)) in [c for c in r.log if c[0] == "head.move_to"]
    assert ("head.move_to", "head_pan", 0.0) in r.log


def test_locobot_start_pose_tilts_the_camera_back():
    from flare_policy.protocol import START_POSE

    drv = FakeLocobotDriver(clock=SimClock())
    ex = LocobotExecutor(drv, LocobotParams(initial_tilt_deg=15.0))
    assert ex.execute("rotate_right_small").success  # look_down
    out = ex.execute(START_POSE)
    assert out.success and drv.tilt == pytest.approx(15 * DEG), (out, drv.tilt)
    assert not [t for t in drv.twists if t[1] or t[2]]  # the base never moves for it
