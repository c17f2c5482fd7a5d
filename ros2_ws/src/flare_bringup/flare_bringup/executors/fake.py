"""Dry-run backends: kinematic stand-ins for the robot *at our driver interface*.

They never touch hardware. Use them to dry-run the policy <-> executor loop on any machine
(`backend:=fake`), and in the tests, which drive the real StretchExecutor / LocobotExecutor / ExecutorNode
through them. Every call is recorded in `calls` and optionally reported through `log`.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable, Optional

from .base import (
    GRIPPER_APERTURE, JOINT_ARM, JOINT_HEAD_PAN, JOINT_HEAD_TILT, JOINT_LIFT, JOINT_WRIST_YAW, DriverError,
    GripperReading, JointLimit, MotionInterrupted, RobotDriver, robotis_to_aperture,
)
from .locobot import LocobotDriver, Pose2D
from .stretch import DEFAULT_LIMITS


class SimClock:
    """Simulated time: sleep() advances now() instantly (for fast, deterministic unit tests)."""

    def __init__(self, t0: float = 1000.0):
        self.t = t0

    def now(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += max(0.0, dt)


class FakeStretchDriver(RobotDriver):
    """A Stretch whose joints move instantly after `motion_time_s` of (interruptible) real time."""

    name = "fake"

    def __init__(self, *, motion_time_s: float = 0.0, object_width_m: float = 0.0,
                 positions: Optional[dict[str, float]] = None, limits: Optional[dict[str, JointLimit]] = None,
                 log: Optional[Callable[[str], None]] = None, fail_actions: tuple[str, ...] = ()):
        self.motion_time_s = motion_time_s
        self.object_width_m = object_width_m  # 0: nothing between the fingers
        self.positions = {JOINT_LIFT: 0.5, JOINT_ARM: 0.1, JOINT_WRIST_YAW: 0.0, GRIPPER_APERTURE: 0.05,
                          JOINT_HEAD_PAN: 0.3, JOINT_HEAD_TILT: 0.0}
        self.positions.update(positions or {})
        self.limits = dict(DEFAULT_LIMITS)
        self.limits.update(limits or {})
        self.base = [0.0, 0.0, 0.0]  # x, y, theta (REP 103)
        self.calls: list[tuple] = []
        self.runstopped = False
        self.ready = True
        self.fail_kinds = set(fail_actions)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._log = log

    # -- RobotDriver ------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> None:
        self._record("start")

    def close(self) -> None:
        self._record("close")

    def is_ready(self) -> tuple[bool, str]:
        if not self.ready:
            return False, "fake driver set not ready"
        return True, ""

    def is_runstopped(self) -> bool:
        return self.runstopped

    def joint_positions(self) -> dict[str, float]:
        with self._lock:
            return dict(self.positions)

    def joint_limits(self) -> dict[str, JointLimit]:
        return dict(self.limits)

    def translate_base(self, meters: float) -> None:
        self._record("translate_base", meters)
        self._wait("translate")
        with self._lock:
            self.base[0] += meters * math.cos(self.base[2])
            self.base[1] += meters * math.sin(self.base[2])

    def rotate_base(self, radians: float) -> None:
        self._record("rotate_base", radians)
        self._wait("rotate")
        with self._lock:
            self.base[2] += radians

    def move_joint_to(self, joint: str, target: float) -> None:
        self._record("move_joint_to", joint, target)
        if joint not in (JOINT_LIFT, JOINT_ARM, JOINT_WRIST_YAW, JOINT_HEAD_PAN, JOINT_HEAD_TILT):
            raise DriverError(f"unknown joint {joint}")
        self._wait("joint")
        with self._lock:
            self.positions[joint] = target

    def gripper(self, command: str) -> GripperReading:
        self._record("gripper", command)
        if command not in ("open", "close"):
            raise DriverError(f"bad gripper command {command!r}")
        self._wait("gripper")
        with self._lock:
            if command == "open":
                self.positions[GRIPPER_APERTURE] = robotis_to_aperture(30.0)
                return GripperReading(self.positions[GRIPPER_APERTURE], -5.0)
            if self.object_width_m > 0:
                self.positions[GRIPPER_APERTURE] = self.object_width_m
                return GripperReading(self.object_width_m, -60.0)
            self.positions[GRIPPER_APERTURE] = -0.002
            return GripperReading(-0.002, -30.0)

    def stop(self) -> None:
        self._record("stop")
        self._stop.set()

    # -- helpers ----------------------------------------------------------------------------------------
    def _record(self, *call) -> None:
        self.calls.append(call)
        if self._log is not None:
            self._log("fake driver: " + call[0] + "(" + ", ".join(
                f"{a:.4f}" if isinstance(a, float) else str(a) for a in call[1:]) + ")")

    def _wait(self, kind: str) -> None:
        self._stop.clear()
        if kind in self.fail_kinds:
            raise DriverError(f"fake {kind} failure")
        if self.runstopped:
            raise MotionInterrupted("runstopped")
        if self.motion_time_s > 0 and self._stop.wait(self.motion_time_s):
            raise MotionInterrupted("stopped")


class FakeLocobotDriver(LocobotDriver):
    """A velocity-controlled base integrating the last Twist (held for `cmd_timeout_s`, like a Create 3).

    `max_travel_m` / `max_turn_rad` simulate an obstacle; `odom_rate_hz` how often odometry updates;
    `clock` may be a SimClock for instant unit tests.
    """

    name = "fake"

    def __init__(self, *, clock=None, cmd_timeout_s: float = 0.5, max_travel_m: float = float("inf"),
                 max_turn_rad: float = float("inf"), odom_rate_hz: float = 50.0, tilt: bool = True,
                 log: Optional[Callable[[str], None]] = None):
        self.clock = clock
        self.cmd_timeout_s = cmd_timeout_s
        self.max_travel_m = max_travel_m
        self.max_turn_rad = max_turn_rad
        self.odom_period = 1.0 / odom_rate_hz
        self.pose = [0.0, 0.0, 0.0]
        self.travelled = 0.0
        self.turned = 0.0
        self.cmd = (0.0, 0.0)
        self.cmd_time = -1e9
        self.twists: list[tuple[float, float, float]] = []  # (time, vx, wz)
        self.tilt = 0.0 if tilt else None
        self.tilt_enabled = tilt
        self.calls: list[tuple] = []
        self.runstopped = False
        self._sim_t = None
        self._last_odom_t = None
        self._odom: Optional[Pose2D] = None
        self._lock = threading.Lock()
        self._log = log
        self._last_integrate = self.now()

    def now(self) -> float:
        return self.clock.now() if self.clock is not None else time.monotonic()

    def sleep(self, dt: float) -> None:
        if self.clock is not None:
            self.clock.sleep(dt)
        else:
            time.sleep(dt)

    def is_ready(self) -> tuple[bool, str]:
        return True, ""

    def is_runstopped(self) -> bool:
        return self.runstopped

    def _integrate(self) -> None:
        t = self.now()
        with self._lock:
            dt = t - self._last_integrate
            self._last_integrate = t
            if dt <= 0:
                return
            vx, wz = self.cmd
            active_until = self.cmd_time + self.cmd_timeout_s
            dt_active = max(0.0, min(t, active_until) - (t - dt))
            if dt_active <= 0:
                return
            dx = vx * dt_active
            if self.travelled + abs(dx) > self.max_travel_m:
                dx = math.copysign(max(0.0, self.max_travel_m - self.travelled), dx)
            dth = wz * dt_active
            if self.turned + abs(dth) > self.max_turn_rad:
                dth = math.copysign(max(0.0, self.max_turn_rad - self.turned), dth)
            self.travelled += abs(dx)
            self.turned += abs(dth)
            self.pose[0] += dx * math.cos(self.pose[2] + dth / 2)
            self.pose[1] += dx * math.sin(self.pose[2] + dth / 2)
            self.pose[2] = (self.pose[2] + dth + math.pi) % (2 * math.pi) - math.pi

    def publish_velocity(self, linear_x: float, angular_z: float) -> None:
        self._integrate()
        t = self.now()
        with self._lock:
            self.cmd = (linear_x, angular_z)
            self.cmd_time = t
            self.twists.append((t, linear_x, angular_z))

    def odometry(self) -> Optional[Pose2D]:
        self._integrate()
        t = self.now()
        if self._last_odom_t is None or t - self._last_odom_t >= self.odom_period:
            self._last_odom_t = t
            self._odom = Pose2D(self.pose[0], self.pose[1], self.pose[2], t)
        return self._odom

    def has_tilt(self) -> tuple[bool, str]:
        return (True, "") if self.tilt_enabled else (False, "no camera tilt interface configured")

    def tilt_to(self, radians: float) -> None:
        self.calls.append(("tilt_to", radians))
        if self._log is not None:
            self._log(f"fake driver: tilt_to({radians:.4f})")
        self.tilt = radians

    def tilt_position(self) -> Optional[float]:
        return self.tilt

    def stop(self) -> None:
        self.calls.append(("stop",))
        if self._log is not None:
            self._log("fake driver: stop()")
        self.publish_velocity(0.0, 0.0)
