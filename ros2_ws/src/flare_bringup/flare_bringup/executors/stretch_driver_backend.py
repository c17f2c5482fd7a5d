"""Stretch backend through Hello Robot's `stretch_driver` (stretch_ros2 / stretch_core), position mode.

* Motions: FollowJointTrajectory goals on `/stretch_controller/follow_joint_trajectory`, one joint and one point
  per goal, so the base joints `translate_mobile_base` / `rotate_mobile_base` (relative) are never combined.
  The next goal is sent only after the previous result arrived and at least `min_goal_interval_s` later (the
  driver rejects goals < 0.2 s apart).
* State: `/stretch/joint_states` looked up *by name*; limits from `/joint_limits` (lower = position[],
  upper = velocity[]), published after a `/get_joint_states` call; `/mode` must be `position` (switched with
  `/switch_to_position_mode` if allowed); `/stop_the_robot` on stop.
* control_msgs (FollowJointTrajectory) is not on PyPI: the action client is import-guarded and fails with a
  clear message. Goals are built as trajectory_msgs/JointTrajectory, so goal construction is testable anywhere.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, fields
from typing import Callable, Optional

from .base import (
    GRIPPER_APERTURE, JOINT_ARM, JOINT_LIFT, JOINT_WRIST_YAW, DriverError, DriverUnavailable, GripperReading,
    JointLimit, MotionInterrupted, RobotDriver, aperture_to_finger_rad, finger_rad_to_aperture,
    robotis_to_aperture, wait_until_settled,
)

BASE_TRANSLATE = "translate_mobile_base"
BASE_ROTATE = "rotate_mobile_base"
GRIPPER_FINGER = "joint_gripper_finger_left"
ARM_SEGMENTS = ("joint_arm_l0", "joint_arm_l1", "joint_arm_l2", "joint_arm_l3")
GOAL_JOINTS = (BASE_TRANSLATE, BASE_ROTATE, JOINT_LIFT, JOINT_ARM, JOINT_WRIST_YAW, GRIPPER_FINGER)
CONTROL_MODES = ("position", "navigation", "trajectory")


@dataclass
class DriverBackendConfig:
    joint_states_topic: str = "/stretch/joint_states"
    joint_limits_topic: str = "/joint_limits"
    mode_topic: str = "/mode"
    get_joint_states_service: str = "/get_joint_states"
    stop_service: str = "/stop_the_robot"
    switch_to_position_service: str = "/switch_to_position_mode"
    trajectory_action: str = "/stretch_controller/follow_joint_trajectory"
    auto_position_mode: bool = True
    min_goal_interval_s: float = 0.25
    goal_timeout_s: float = 20.0
    joint_state_timeout_s: float = 1.0
    gripper_settle_s: float = 0.3
    gripper_timeout_s: float = 4.0
    gripper_close_pct: float = -10.0
    gripper_open_pct: float = 30.0

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def build_trajectory(joint: str, position: float):
    """One-joint, one-point trajectory_msgs/JointTrajectory for a position-mode goal."""
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    if joint not in GOAL_JOINTS:
        raise ValueError(f"refusing to build a goal for joint {joint!r} (known: {GOAL_JOINTS})")
    if not math.isfinite(position):
        raise ValueError(f"non-finite goal for {joint}: {position}")
    traj = JointTrajectory()
    traj.joint_names = [joint]
    pt = JointTrajectoryPoint()
    pt.positions = [float(position)]
    pt.time_from_start.sec = 0
    pt.time_from_start.nanosec = 0
    traj.points = [pt]
    return traj


def check_goal(traj) -> None:
    """Invariants every goal must satisfy before it is sent (raises ValueError)."""
    names = list(traj.joint_names)
    if len(traj.points) != 1 or len(traj.points[0].positions) != len(names):
        raise ValueError("a goal must have exactly one point with one position per joint")
    if BASE_TRANSLATE in names and BASE_ROTATE in names:
        raise ValueError("translate_mobile_base and rotate_mobile_base must never share a goal")
    if len(names) != 1:
        raise ValueError(f"one joint per goal, got {names}")


def positions_from_joint_state(names, positions) -> dict[str, float]:
    """stretch_driver JointState -> {JOINT_*: value, GRIPPER_APERTURE: m}, by name, never by index."""
    js = {n: float(p) for n, p in zip(names, positions)}
    out: dict[str, float] = {}
    if JOINT_LIFT in js:
        out[JOINT_LIFT] = js[JOINT_LIFT]
    if JOINT_ARM in js:
        out[JOINT_ARM] = js[JOINT_ARM]
    elif all(s in js for s in ARM_SEGMENTS):
        out[JOINT_ARM] = sum(js[s] for s in ARM_SEGMENTS)
    elif "joint_arm" in js:
        out[JOINT_ARM] = js["joint_arm"]
    if JOINT_WRIST_YAW in js:
        out[JOINT_WRIST_YAW] = js[JOINT_WRIST_YAW]
    if GRIPPER_APERTURE in js:
        out[GRIPPER_APERTURE] = js[GRIPPER_APERTURE]
    elif GRIPPER_FINGER in js:
        out[GRIPPER_APERTURE] = finger_rad_to_aperture(js[GRIPPER_FINGER])
    return out


def limits_from_joint_limits(names, lower, upper) -> dict[str, JointLimit]:
    """/joint_limits (JointState: position[] = lower, velocity[] = upper) -> {joint: JointLimit}."""
    out: dict[str, JointLimit] = {}
    for n, lo, hi in zip(names, lower, upper):
        try:
            lim = JointLimit(float(lo), float(hi))
        except ValueError:
            continue
        if n in (JOINT_LIFT, JOINT_WRIST_YAW, GRIPPER_FINGER, JOINT_ARM):
            out[n] = lim
        elif n == "joint_arm" and JOINT_ARM not in out:
            out[JOINT_ARM] = lim
    return out


class FollowJointTrajectoryClient:
    """Thin action client; the only piece that needs control_msgs."""

    def __init__(self, node, action_name: str, callback_group=None):
        try:
            from control_msgs.action import FollowJointTrajectory  # noqa: F401
        except ImportError as e:
            raise DriverUnavailable(
                "the stretch driver backend needs control_msgs (FollowJointTrajectory), which is not "
                "importable here: on the robot install it with `sudo apt install ros-humble-control-msgs` "
                "(it comes with stretch_ros2), or use backend:=body (stretch_body) or backend:=fake (dry run)"
            ) from e
        from rclpy.action import ActionClient

        self._type = FollowJointTrajectory
        self._client = ActionClient(node, FollowJointTrajectory, action_name, callback_group=callback_group)
        self._active = None
        self._lock = threading.Lock()

    def server_ready(self) -> bool:
        return self._client.server_is_ready()

    def send(self, trajectory, timeout_s: float, halted: Callable[[], bool],
             until: Optional[Callable[[], bool]] = None) -> tuple[bool, str]:
        goal = self._type.Goal()
        goal.trajectory = trajectory
        goal.goal_time_tolerance.sec = 1
        fut = self._client.send_goal_async(goal)
        _wait_future(fut, 5.0, halted, "goal acceptance")
        handle = fut.result()
        if handle is None or not handle.accepted:
            return False, ("goal rejected by stretch_driver (runstopped, homing/stowing, not in position mode, "
                           "or sent < 0.2 s after the previous goal)")
        with self._lock:
            self._active = handle
        try:
            rfut = handle.get_result_async()
            deadline = time.monotonic() + timeout_s
            while not rfut.done():
                if halted():
                    handle.cancel_goal_async()
                    raise MotionInterrupted("halted")
                if until is not None and until():
                    return True, "settled before the goal completed"
                if time.monotonic() > deadline:
                    handle.cancel_goal_async()
                    return False, f"no result within {timeout_s:.0f} s"
                time.sleep(0.01)
            res = rfut.result()
            code = getattr(res.result, "error_code", 0)
            if code != 0:
                return False, f"stretch_driver error_code {code}: {getattr(res.result, 'error_string', '')}"
            if res.status not in (4,):  # action_msgs/GoalStatus.STATUS_SUCCEEDED
                return False, f"goal finished with status {res.status}"
            return True, ""
        finally:
            with self._lock:
                self._active = None

    def cancel(self) -> None:
        with self._lock:
            h = self._active
        if h is not None:
            h.cancel_goal_async()


def _wait_future(fut, timeout_s: float, halted: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not fut.done():
        if halted():
            raise MotionInterrupted("halted")
        if time.monotonic() > deadline:
            raise DriverError(f"timeout waiting for {what}")
        time.sleep(0.01)


class StretchDriverBackend(RobotDriver):
    """RobotDriver over stretch_driver's ROS 2 interface. Needs an rclpy node that is being spun elsewhere."""

    name = "driver"

    def __init__(self, node, config: Optional[DriverBackendConfig] = None, trajectory_client=None,
                 callback_group=None):
        from rclpy.callback_groups import ReentrantCallbackGroup
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        self.node = node
        self.cfg = config or DriverBackendConfig()
        self._cbg = callback_group or ReentrantCallbackGroup()
        self._lock = threading.Lock()
        self._positions: dict[str, float] = {}
        self._positions_t = None
        self._limits: dict[str, JointLimit] = {}
        self._mode: Optional[str] = None
        self._halt = threading.Event()
        self._last_goal_t = 0.0
        self._last_switch_t = 0.0
        self._last_limits_request_t = 0.0
        self._trigger = Trigger
        self._client = trajectory_client  # created in start() unless injected
        c = self.cfg
        node.create_subscription(JointState, c.joint_states_topic, self._on_joint_states, 5,
                                 callback_group=self._cbg)
        node.create_subscription(JointState, c.joint_limits_topic, self._on_joint_limits, 5,
                                 callback_group=self._cbg)
        node.create_subscription(String, c.mode_topic, self._on_mode, 5, callback_group=self._cbg)
        self._limits_srv = node.create_client(Trigger, c.get_joint_states_service, callback_group=self._cbg)
        self._stop_srv = node.create_client(Trigger, c.stop_service, callback_group=self._cbg)
        self._position_srv = node.create_client(Trigger, c.switch_to_position_service, callback_group=self._cbg)

    # -- callbacks --------------------------------------------------------------------------------------
    def _on_joint_states(self, msg) -> None:
        pos = positions_from_joint_state(msg.name, msg.position)
        with self._lock:
            self._positions.update(pos)
            self._positions_t = time.monotonic()

    def _on_joint_limits(self, msg) -> None:
        lim = limits_from_joint_limits(msg.name, msg.position, msg.velocity)
        with self._lock:
            self._limits.update(lim)

    def _on_mode(self, msg) -> None:
        self._mode = msg.data

    # -- RobotDriver ------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> None:
        if self._client is None:
            self._client = FollowJointTrajectoryClient(self.node, self.cfg.trajectory_action, self._cbg)
        self._request_limits()

    def _request_limits(self) -> None:
        if self._limits_srv.service_is_ready():  # not discovered yet: is_ready() asks again on its next call
            self._last_limits_request_t = time.monotonic()
            self._limits_srv.call_async(self._trigger.Request())

    def is_ready(self) -> tuple[bool, str]:
        now = time.monotonic()
        if self._positions_t is None:
            return False, f"no joint states on {self.cfg.joint_states_topic} yet (is stretch_driver running?)"
        if now - self._positions_t > self.cfg.joint_state_timeout_s:
            return False, f"joint states on {self.cfg.joint_states_topic} are stale ({now - self._positions_t:.1f} s)"
        if not self._limits:
            # never move on guessed limits: this robot's /joint_limits must have arrived first
            if now - self._last_limits_request_t > 2.0:
                self._request_limits()
            return False, f"waiting for joint limits ({self.cfg.get_joint_states_service} -> /joint_limits)"
        mode = self._mode
        if mode is None:
            return False, f"no stretch_driver mode on {self.cfg.mode_topic} yet"
        if mode != "position":
            if mode in CONTROL_MODES and self.cfg.auto_position_mode:
                if now - self._last_switch_t > 2.0 and self._position_srv.service_is_ready():
                    self._last_switch_t = now
                    self._position_srv.call_async(self._trigger.Request())
                return False, f"stretch_driver is in {mode} mode; switching to position mode"
            return False, f"stretch_driver is in {mode} mode (position mode required)"
        if self._client is None or not self._client.server_ready():
            return False, f"trajectory action {self.cfg.trajectory_action} not available"
        return True, ""

    def is_runstopped(self) -> bool:
        return self._mode == "runstopped"

    def joint_positions(self) -> dict[str, float]:
        with self._lock:
            if self._positions_t is None:
                raise DriverError("no joint states received")
            return dict(self._positions)

    def joint_limits(self) -> dict[str, JointLimit]:
        with self._lock:
            return dict(self._limits)

    def translate_base(self, meters: float) -> None:
        self._goal(BASE_TRANSLATE, meters)

    def rotate_base(self, radians: float) -> None:
        self._goal(BASE_ROTATE, radians)

    def move_joint_to(self, joint: str, target: float) -> None:
        if joint not in (JOINT_LIFT, JOINT_ARM, JOINT_WRIST_YAW):
            raise DriverError(f"unsupported joint {joint}")
        self._goal(joint, target)

    def gripper(self, command: str) -> GripperReading:
        if command not in ("open", "close"):
            raise DriverError(f"bad gripper command {command!r}")
        pct = self.cfg.gripper_close_pct if command == "close" else self.cfg.gripper_open_pct
        target = aperture_to_finger_rad(robotis_to_aperture(pct))
        lim = self.joint_limits().get(GRIPPER_FINGER)
        if lim is not None:
            target = lim.clip(target)

        def aperture() -> Optional[float]:
            with self._lock:
                return self._positions.get(GRIPPER_APERTURE)

        settled = _SettleDetector(aperture, tolerance=0.0005, settle_s=self.cfg.gripper_settle_s)
        self._goal(GRIPPER_FINGER, target, timeout_s=self.cfg.gripper_timeout_s, until=settled,
                   timeout_ok=True)
        final = wait_until_settled(aperture, tolerance=0.0005, settle_s=self.cfg.gripper_settle_s,
                                   timeout_s=self.cfg.gripper_timeout_s, halted=self._halt.is_set)
        if final is None:
            raise DriverError("gripper aperture unknown (no joint_gripper_finger_left in joint states)")
        return GripperReading(final, None)

    def stop(self) -> None:
        self._halt.set()
        if self._client is not None:
            try:
                self._client.cancel()
            except Exception:
                pass
        if self._stop_srv.service_is_ready():
            self._stop_srv.call_async(self._trigger.Request())

    def close(self) -> None:
        pass

    # -- internals --------------------------------------------------------------------------------------
    def _goal(self, joint: str, value: float, timeout_s: Optional[float] = None,
              until: Optional[Callable[[], bool]] = None, timeout_ok: bool = False) -> None:
        self._halt.clear()
        if self._client is None:
            raise DriverUnavailable("trajectory client not started")
        traj = build_trajectory(joint, value)
        check_goal(traj)
        wait = self._last_goal_t + self.cfg.min_goal_interval_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_goal_t = time.monotonic()
        ok, msg = self._client.send(traj, timeout_s or self.cfg.goal_timeout_s, self._halt.is_set, until)
        self._last_goal_t = time.monotonic()
        if self._halt.is_set():
            raise MotionInterrupted("halted")
        if not ok and not (timeout_ok and msg.startswith("no result")):
            raise DriverError(f"{joint} -> {value:.4f}: {msg}")


class _SettleDetector:
    """Callable that becomes true once `read()` stayed within `tolerance` for `settle_s`."""

    def __init__(self, read, tolerance: float, settle_s: float, min_wait_s: float = 0.3):
        self.read, self.tol, self.settle_s = read, tolerance, settle_s
        self.t0 = time.monotonic()
        self.min_wait_s = min_wait_s
        self.last = None
        self.since = self.t0

    def __call__(self) -> bool:
        now = time.monotonic()
        cur = self.read()
        if cur is None or self.last is None or abs(cur - self.last) > self.tol:
            self.since = now
        self.last = cur
        return now - self.t0 >= self.min_wait_s and now - self.since >= self.settle_s
