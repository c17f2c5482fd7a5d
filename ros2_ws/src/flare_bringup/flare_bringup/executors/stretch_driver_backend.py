"""Stretch backend through Hello Robot's `stretch_driver` (stretch_ros2 / stretch_core), position mode.

* Motions: FollowJointTrajectory goals on `/stretch_controller/follow_joint_trajectory`, one joint and one point
  per goal, so the base joints `translate_mobile_base` / `rotate_mobile_base` (relative) are never combined.
  The next goal is sent only after the previous result arrived and at least `min_goal_interval_s` later (the
  driver rejects goals < 0.2 s apart).
* State: `/stretch/joint_states` looked up *by name* (positions, and the gripper finger's effort for the grasp
  check); limits from `/joint_limits` (lower = position[], upper = velocity[]), published after a
  `/get_joint_states` call. That service exists only in stretch_driver since 2024-02-29: when it is not
  discovered within `limits_wait_s`, the limits given by the executor (the `limits.*` parameters of
  executor_stretch.yaml) are used instead, and `limits_source` says which source is in force. `/mode` must be
  `position` (switched with `/switch_to_position_mode` if allowed); `/is_homed` must be true (an un-homed
  robot drops lift/arm goals: stretch_body prismatic_joint.move_to), optionally by calling `/home_the_robot`.
* Stop: cancelling a goal only calls stretch_body's stop_trajectory(), which does not stop a position-mode
  move (stretch_core joint_trajectory_server.py), and `/stop_the_robot` zero-moves every joint *including the
  gripper*, which drops a grasp (stretch_driver.py stop_the_robot_callback). So `stop()` preempts the running
  goal with a "hold" goal for the joint that was moving (a zero-length base move, or the joint's current
  position), never touching the gripper; `/stop_the_robot` is called only with `use_stop_service`.
* Also watched: `/diagnostics` (statuses of stretch_driver's own updater at ERROR make the robot not ready),
  `/battery` (voltage below `low_battery_v` warns; stretch_body's low_voltage_alert is 10.5 V)
  and `/tool` (not `expected_tool` = not ready: the grasp check assumes the Stretch gripper).
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
    GRIPPER_APERTURE, JOINT_ARM, JOINT_HEAD_PAN, JOINT_HEAD_TILT, JOINT_LIFT, JOINT_WRIST_YAW, DriverError,
    DriverUnavailable, GripperReading, JointLimit, MotionInterrupted, RobotDriver, aperture_to_finger_rad, finger_rad_to_aperture,
    robotis_to_aperture, wait_until_settled,
)

BASE_TRANSLATE = "translate_mobile_base"
BASE_ROTATE = "rotate_mobile_base"
GRIPPER_FINGER = "joint_gripper_finger_left"
ARM_SEGMENTS = ("joint_arm_l0", "joint_arm_l1", "joint_arm_l2", "joint_arm_l3")
GOAL_JOINTS = (BASE_TRANSLATE, BASE_ROTATE, JOINT_LIFT, JOINT_ARM, JOINT_WRIST_YAW, GRIPPER_FINGER, JOINT_HEAD_PAN,
               JOINT_HEAD_TILT)
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
    is_homed_topic: str = "/is_homed"
    home_service: str = "/home_the_robot"
    home_if_needed: bool = False
    battery_topic: str = "/battery"
    low_battery_v: float = 10.5
    tool_topic: str = "/tool"
    expected_tool: str = "tool_stretch_gripper"
    limits_wait_s: float = 5.0
    driver_diagnostics_topic: str = "/diagnostics"
    driver_diagnostics_prefix: str = "stretch_driver"
    use_stop_service: bool = False
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
    for j in (JOINT_HEAD_PAN, JOINT_HEAD_TILT):
        if j in js:
            out[j] = js[j]
    return out


def effort_from_joint_state(names, efforts, joint: str = GRIPPER_FINGER) -> Optional[float]:
    """The effort stretch_driver reports for `joint` (gripper: Robotis effort %), None if absent."""
    for n, e in zip(names, efforts):
        if n == joint and math.isfinite(float(e)):
            return float(e)
    return None


def limits_from_joint_limits(names, lower, upper) -> dict[str, JointLimit]:
    """/joint_limits (JointState: position[] = lower, velocity[] = upper) -> {joint: JointLimit}."""
    out: dict[str, JointLimit] = {}
    for n, lo, hi in zip(names, lower, upper):
        try:
            lim = JointLimit(float(lo), float(hi))
        except ValueError:
            continue
        if n in (JOINT_LIFT, JOINT_WRIST_YAW, GRIPPER_FINGER, JOINT_ARM, JOINT_HEAD_PAN, JOINT_HEAD_TILT):
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
                 callback_group=None, fallback_limits: Optional[dict[str, JointLimit]] = None):
        from rclpy.callback_groups import ReentrantCallbackGroup
        from sensor_msgs.msg import BatteryState, JointState
        from std_msgs.msg import Bool, String
        from std_srvs.srv import Trigger

        self.node = node
        self.cfg = config or DriverBackendConfig()
        self._cbg = callback_group or ReentrantCallbackGroup()
        self._lock = threading.Lock()
        self._positions: dict[str, float] = {}
        self._positions_t = None
        self._limits: dict[str, JointLimit] = {}
        self._fallback_limits = dict(fallback_limits or {})
        self.limits_source = ""  # which limits are in force, once known
        self._effort: Optional[float] = None
        self._homed: Optional[bool] = None
        self._last_home_t = 0.0
        self._tool: Optional[str] = None
        self._battery_v: Optional[float] = None
        self._battery_warned_t = 0.0
        self._driver_errors: dict[str, tuple[str, float]] = {}  # status name -> (message, receive time)
        self._moving_joint: Optional[str] = None  # joint of the goal in flight (what stop() must hold)
        self._send_lock = threading.Lock()
        self._t_start = time.monotonic()
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
        if c.is_homed_topic:
            node.create_subscription(Bool, c.is_homed_topic, self._on_homed, 5, callback_group=self._cbg)
        if c.tool_topic:
            node.create_subscription(String, c.tool_topic, self._on_tool, 5, callback_group=self._cbg)
        if c.battery_topic:
            node.create_subscription(BatteryState, c.battery_topic, self._on_battery, 5, callback_group=self._cbg)
        if c.driver_diagnostics_topic:
            from diagnostic_msgs.msg import DiagnosticArray
            node.create_subscription(DiagnosticArray, c.driver_diagnostics_topic, self._on_diagnostics, 10,
                                     callback_group=self._cbg)
        self._home_srv = node.create_client(Trigger, c.home_service, callback_group=self._cbg)
        self._limits_srv = node.create_client(Trigger, c.get_joint_states_service, callback_group=self._cbg)
        self._stop_srv = node.create_client(Trigger, c.stop_service, callback_group=self._cbg)
        self._position_srv = node.create_client(Trigger, c.switch_to_position_service, callback_group=self._cbg)

    # -- callbacks --------------------------------------------------------------------------------------
    def _on_joint_states(self, msg) -> None:
        pos = positions_from_joint_state(msg.name, msg.position)
        effort = effort_from_joint_state(msg.name, msg.effort) if len(msg.effort) == len(msg.name) else None
        with self._lock:
            self._positions.update(pos)
            self._effort = effort
            self._positions_t = time.monotonic()

    def _on_joint_limits(self, msg) -> None:
        lim = limits_from_joint_limits(msg.name, msg.position, msg.velocity)
        with self._lock:
            self._limits.update(lim)
            if lim and self.limits_source != c_limits_source(self.cfg):
                self.limits_source = c_limits_source(self.cfg)
                self._log_info(f"joint limits from {self.limits_source}: " + ", ".join(
                    f"{k} [{v.lower:.3f}, {v.upper:.3f}]" for k, v in sorted(lim.items())))

    def _on_mode(self, msg) -> None:
        self._mode = msg.data

    def _on_homed(self, msg) -> None:
        self._homed = bool(msg.data)

    def _on_tool(self, msg) -> None:
        self._tool = msg.data

    def _on_battery(self, msg) -> None:
        v = float(msg.voltage)
        self._battery_v = v if math.isfinite(v) else None
        now = time.monotonic()
        if self._battery_v is not None and self._battery_v < self.cfg.low_battery_v \
                and now - self._battery_warned_t > 30.0:
            self._battery_warned_t = now
            self._log_warn(f"battery low: {self._battery_v:.2f} V (< {self.cfg.low_battery_v:.2f} V): charge the "
                           f"robot (stretch_body's own low-voltage alert is 10.5 V)")

    def _on_diagnostics(self, msg) -> None:
        """stretch_driver's own hardware checks (stretch_core stretch_diagnostics.py: "Hardware not present",
        voltage out of range, ...): its ERRORs make the robot not ready; other publishers are ignored."""
        now = time.monotonic()
        with self._lock:
            for st in msg.status:
                if not st.name.startswith(self.cfg.driver_diagnostics_prefix):
                    continue
                level = st.level[0] if isinstance(st.level, (bytes, bytearray)) else int(st.level)
                if level >= 2:  # ERROR (3 = STALE counts too)
                    self._driver_errors[st.name] = (st.message, now)
                else:
                    self._driver_errors.pop(st.name, None)

    def _log_info(self, msg: str) -> None:
        try:
            self.node.get_logger().info(msg)
        except Exception:  # noqa: BLE001 - logging must never break a callback
            pass

    def _log_warn(self, msg: str) -> None:
        try:
            self.node.get_logger().warning(msg)
        except Exception:  # noqa: BLE001
            pass

    @property
    def battery_voltage(self) -> Optional[float]:
        return self._battery_v

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
        c = self.cfg
        if self._positions_t is None:
            return False, f"no joint states on {c.joint_states_topic} yet (is stretch_driver running?)"
        if now - self._positions_t > c.joint_state_timeout_s:
            return False, f"joint states on {c.joint_states_topic} are stale ({now - self._positions_t:.1f} s)"
        if not self._limits:
            # never move on guessed limits: this robot's /joint_limits, or the documented fallback
            if self._limits_srv.service_is_ready():
                if now - self._last_limits_request_t > 2.0:
                    self._request_limits()
                return False, f"waiting for joint limits ({c.get_joint_states_service} -> {c.joint_limits_topic})"
            if now - self._t_start < c.limits_wait_s:
                return False, f"waiting for the {c.get_joint_states_service} service (joint limits)"
            if not self._fallback_limits:
                return False, (f"stretch_driver has no {c.get_joint_states_service} service (older than "
                               f"2024-02-29) and no fallback limits were given (limits.* parameters)")
            with self._lock:
                self._limits.update(self._fallback_limits)
            self.limits_source = "the limits.* parameters (stretch_driver has no " + c.get_joint_states_service + ")"
            self._log_warn(f"{c.get_joint_states_service} not available: this stretch_driver predates "
                           f"2024-02-29; using joint limits from {self.limits_source}: " + ", ".join(
                               f"{k} [{v.lower:.3f}, {v.upper:.3f}]" for k, v in sorted(self._fallback_limits.items()))
                           + " -- check them against this robot's calibration (stretch_params.py)")
        if c.is_homed_topic:
            if self._homed is None:
                return False, f"no homing state on {c.is_homed_topic} yet"
            if not self._homed:
                if c.home_if_needed and self._mode in CONTROL_MODES:
                    if now - self._last_home_t > 40.0 and self._home_srv.service_is_ready():
                        self._last_home_t = now  # homing takes ~30 s and blocks stretch_driver meanwhile
                        self._log_warn(f"robot not homed: calling {c.home_service} (home_if_needed)")
                        self._home_srv.call_async(self._trigger.Request())
                    return False, f"robot not homed: homing through {c.home_service}"
                return False, (f"robot not homed: lift and arm goals would fail; run stretch_robot_home.py (or call "
                               f"{c.home_service}, or set home_if_needed:=true)")
        if c.tool_topic and c.expected_tool and self._tool is not None and self._tool != c.expected_tool:
            return False, (f"end-of-arm tool is {self._tool!r} on {c.tool_topic}, expected {c.expected_tool!r} "
                           f"(the grasp check and gripper targets assume the Stretch gripper)")
        with self._lock:  # an error not repeated for 5 s is over (the driver publishes at 1 Hz)
            errors = {k: m for k, (m, t) in self._driver_errors.items() if now - t < 5.0}
        if errors:
            return False, "stretch_driver diagnostics ERROR: " + "; ".join(
                f"{k}: {m}" for k, m in sorted(errors.items()))
        mode = self._mode
        if mode is None:
            return False, f"no stretch_driver mode on {c.mode_topic} yet"
        if mode != "position":
            if mode in CONTROL_MODES and c.auto_position_mode:
                if now - self._last_switch_t > 2.0 and self._position_srv.service_is_ready():
                    self._last_switch_t = now
                    self._position_srv.call_async(self._trigger.Request())
                return False, f"stretch_driver is in {mode} mode; switching to position mode"
            return False, f"stretch_driver is in {mode} mode (position mode required)"
        if self._client is None or not self._client.server_ready():
            return False, f"trajectory action {c.trajectory_action} not available"
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
        if joint not in (JOINT_LIFT, JOINT_ARM, JOINT_WRIST_YAW, JOINT_HEAD_PAN, JOINT_HEAD_TILT):
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
        with self._lock:
            effort = self._effort
        return GripperReading(final, effort)

    def stop(self) -> None:
        joint = self._moving_joint  # read before halting: the halted motion call clears it
        self._halt.set()
        if self._client is not None:
            try:
                self._client.cancel()  # ends our wait; does not stop a position-mode move by itself
            except Exception:
                pass
        if joint is not None and joint != GRIPPER_FINGER:
            threading.Thread(target=self._hold, args=(joint,), name="stretch-hold", daemon=True).start()
        if self.cfg.use_stop_service and self._stop_srv.service_is_ready():
            self._stop_srv.call_async(self._trigger.Request())

    def hold_target(self, joint: str) -> Optional[float]:
        """The goal that halts `joint` where it is: a zero-length base move, or the current position."""
        if joint in (BASE_TRANSLATE, BASE_ROTATE):
            return 0.0
        with self._lock:
            return self._positions.get(joint)

    def _hold(self, joint: str) -> None:
        """Preempt the running goal with one that keeps `joint` where it is now. stretch_driver rejects a goal
        < 0.2 s after the previous one, so a rejected hold is retried for a second."""
        target = self.hold_target(joint)
        if target is None or self._client is None:
            return
        traj = build_trajectory(joint, target)
        deadline = time.monotonic() + 1.0
        with self._send_lock:  # the next command's goal waits until the hold went out
            self._hold_locked(joint, traj, deadline)

    def _hold_locked(self, joint: str, traj, deadline: float) -> None:
        while True:
            wait = self._last_goal_t + self.cfg.min_goal_interval_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last_goal_t = time.monotonic()
            try:
                ok, msg = self._client.send(traj, 5.0, lambda: False)
            except Exception as e:  # noqa: BLE001 - stopping must never raise
                ok, msg = False, repr(e)
            if ok or time.monotonic() > deadline or not msg.startswith("goal rejected"):
                if not ok:
                    self._log_warn(f"stop: hold goal for {joint} failed: {msg}")
                return

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
        with self._send_lock:
            wait = self._last_goal_t + self.cfg.min_goal_interval_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last_goal_t = time.monotonic()
            self._moving_joint = joint
            try:
                ok, msg = self._client.send(traj, timeout_s or self.cfg.goal_timeout_s, self._halt.is_set, until)
            finally:
                self._moving_joint = None
        self._last_goal_t = time.monotonic()
        if self._halt.is_set():
            raise MotionInterrupted("halted")
        if not ok and not (timeout_ok and msg.startswith("no result")):
            raise DriverError(f"{joint} -> {value:.4f}: {msg}")


def c_limits_source(cfg: DriverBackendConfig) -> str:
    return f"{cfg.joint_limits_topic} (stretch_driver {cfg.get_joint_states_service})"


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
