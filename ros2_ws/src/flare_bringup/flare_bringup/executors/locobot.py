"""FLaRe's LoCoBot embodiment -> base velocity commands closed on odometry, and camera tilt (no rclpy, no torch).

The LoCoBot runs the Stretch action head with everything but navigation masked (flare_policy.embodiments
"locobot"; flare_method.md section 9): move_ahead, rotate_left, rotate_right, end, and the two small rotations,
which on the LoCoBot mean look_up (rotate_left_small) and look_down (rotate_right_small). Every other action is
refused with success=false and nothing moves.

Base motions use the procthor-rl LoCoBot step (0.25 m, 30 deg). The Create 3 base only takes velocity
commands and holds the last one until its own timeout, so the executor republishes a Twist at `rate_hz`
(>= 10 Hz) until odometry shows the step was covered (slowing down near the end), then publishes zero. A
timeout (blocked base), stale odometry, a stop command or a runstop publish zero velocity and fail the action.
"""
from __future__ import annotations

import abc
import math
import time
from dataclasses import dataclass, fields
from typing import Optional

from flare_policy.embodiments import get_embodiment
from flare_policy.protocol import START_POSE

from .base import DriverError, DriverExecutor, HaltFlag, MotionInterrupted, Outcome, wrap_angle

EMBODIMENT = get_embodiment("locobot")


@dataclass(frozen=True)
class Pose2D:
    x: float
    y: float
    yaw: float
    stamp: float  # driver clock (monotonic seconds) when the odometry message was received


class LocobotDriver(abc.ABC):
    """Backend interface for a velocity-controlled base with odometry and a tilting camera."""

    name = "locobot"

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect. Raise DriverUnavailable with a clear message if impossible."""

    def close(self) -> None:
        """Release resources (after stop())."""

    @abc.abstractmethod
    def is_ready(self) -> tuple[bool, str]:
        ...

    def is_runstopped(self) -> bool:
        return False

    @abc.abstractmethod
    def publish_velocity(self, linear_x: float, angular_z: float) -> None:
        """Send one velocity command (m/s, rad/s; REP 103)."""

    @abc.abstractmethod
    def odometry(self) -> Optional[Pose2D]:
        """Latest odometry pose, or None if none has arrived."""

    @abc.abstractmethod
    def tilt_to(self, radians: float) -> None:
        """Command the camera tilt joint (positive = looking down, Interbotix convention). Blocks until done."""

    @abc.abstractmethod
    def tilt_position(self) -> Optional[float]:
        """Current (or last commanded) camera tilt in rad, None if unknown."""

    def has_tilt(self) -> tuple[bool, str]:
        return True, ""

    @abc.abstractmethod
    def stop(self) -> None:
        """Publish zero velocity now; make a blocked tilt_to() return."""

    # Time source: overridden by fakes to run simulated time.
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, dt: float) -> None:
        time.sleep(dt)


@dataclass
class LocobotParams:
    move_m: float = 0.25
    rotate_deg: float = 30.0
    linear_speed: float = 0.2        # m/s cruise
    angular_speed: float = 0.6       # rad/s cruise
    min_linear_speed: float = 0.04   # m/s, final approach
    min_angular_speed: float = 0.15  # rad/s, final approach
    slowdown_gain: float = 2.0       # speed = clip(gain * remaining, min, cruise)
    rate_hz: float = 20.0            # Twist republish rate (must be >= 10)
    distance_tolerance_m: float = 0.005
    angle_tolerance_deg: float = 1.0
    timeout_factor: float = 2.5      # timeout = factor * nominal duration + timeout_margin_s
    timeout_margin_s: float = 2.0
    odom_timeout_s: float = 0.5      # odometry older than this stops the motion
    tilt_step_deg: float = 30.0      # ai2thor LookUp/LookDown horizon step
    tilt_min_deg: float = -30.0      # looking up (ai2thor horizon -30)
    tilt_max_deg: float = 60.0       # looking down (ai2thor horizon 60)
    tilt_down_sign: float = 1.0      # +1: positive tilt looks down (Interbotix); -1 otherwise
    initial_tilt_deg: float = 0.0    # assumed tilt until the driver reports one

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def validate(self) -> "LocobotParams":
        for name in ("move_m", "rotate_deg", "linear_speed", "angular_speed", "min_linear_speed",
                     "min_angular_speed", "slowdown_gain", "distance_tolerance_m", "angle_tolerance_deg",
                     "timeout_factor", "odom_timeout_s", "tilt_step_deg"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v}")
        if self.rate_hz < 10.0:
            raise ValueError(f"rate_hz must be >= 10 (the base stops without fresh commands), got {self.rate_hz}")
        if self.min_linear_speed > self.linear_speed or self.min_angular_speed > self.angular_speed:
            raise ValueError("min speeds must not exceed the cruise speeds")
        if self.tilt_min_deg >= self.tilt_max_deg:
            raise ValueError("tilt_min_deg must be below tilt_max_deg")
        if self.tilt_down_sign not in (1.0, -1.0):
            raise ValueError("tilt_down_sign must be 1.0 or -1.0")
        return self


class LocobotExecutor(DriverExecutor):
    """Executes one LoCoBot-allowed FLaRe action at a time."""

    robot = "locobot"

    def __init__(self, driver: LocobotDriver, params: Optional[LocobotParams] = None, logger=None):
        self.driver = driver
        self.params = (params or LocobotParams()).validate()
        self.embodiment = EMBODIMENT
        self.in_hand = False  # the LoCoBot embodiment never grasps
        self._halt = HaltFlag()
        self._log = logger

    @property
    def actions(self) -> tuple[str, ...]:
        return self.embodiment.actions

    def validate(self, action: str) -> Optional[str]:
        if action == START_POSE:
            return None
        if action not in self.embodiment.actions:
            return f"unknown action {action!r} for locobot"
        if not self.embodiment.is_allowed(action):
            allowed = [a for a in self.embodiment.actions if self.embodiment.is_allowed(a)]
            return f"action {action!r} is masked on the locobot embodiment (allowed: {', '.join(allowed)})"
        return None

    def execute(self, action: str) -> Outcome:
        self._halt.clear()
        err = self.validate(action)
        if err:
            return Outcome(False, False, err)
        p = self.params
        try:
            if action == START_POSE:  # the camera back to initial_tilt_deg; the base stays where it is
                ok, why = self.driver.has_tilt()
                if not ok:
                    return Outcome(True, False, f"start_pose: no camera tilt ({why}); nothing to move")
                target = math.radians(p.initial_tilt_deg) * p.tilt_down_sign
                self.driver.tilt_to(target)
                return Outcome(True, False, f"start_pose: camera tilt {p.initial_tilt_deg:.1f} deg down")
            if action == "end":
                return Outcome(True, False, "end: no motion")
            if action == "move_ahead":
                return self._drive(action, p.move_m, angular=False)
            if action == "rotate_left":
                return self._drive(action, math.radians(p.rotate_deg), angular=True)
            if action == "rotate_right":
                return self._drive(action, -math.radians(p.rotate_deg), angular=True)
            meaning = self.embodiment.reinterpreted.get(action, action)
            if meaning in ("look_up", "look_down"):
                return self._tilt(action, meaning)
        except MotionInterrupted as e:
            self._zero()
            return Outcome(False, False, f"{action} interrupted: {self._halt.reason or e}")
        except DriverError as e:
            self._zero()
            return Outcome(False, False, f"{action} failed: {e}")
        return Outcome(False, False, f"{action}: no LoCoBot motion defined")

    # -- internals ------------------------------------------------------------------------------------
    def _zero(self) -> None:
        try:
            self.driver.publish_velocity(0.0, 0.0)
        except Exception:
            pass

    def _fresh_odom(self):
        o = self.driver.odometry()
        if o is None:
            raise DriverError("no odometry received")
        age = self.driver.now() - o.stamp
        if age > self.params.odom_timeout_s:
            raise DriverError(f"odometry is stale ({age:.2f} s old)")
        return o

    def _drive(self, action: str, target: float, angular: bool) -> Outcome:
        """Republish a Twist until odometry shows |target| covered (signed target: m or rad)."""
        p, d = self.params, self.driver
        start = self._fresh_odom()
        sign = 1.0 if target >= 0 else -1.0
        goal = abs(target)
        cruise = p.angular_speed if angular else p.linear_speed
        vmin = p.min_angular_speed if angular else p.min_linear_speed
        tol = math.radians(p.angle_tolerance_deg) if angular else p.distance_tolerance_m
        period = 1.0 / p.rate_hz
        t0 = d.now()
        deadline = t0 + p.timeout_factor * goal / cruise + p.timeout_margin_s
        progress, last_yaw = 0.0, start.yaw
        while True:
            if self._halt.is_set():
                raise MotionInterrupted(self._halt.reason)
            o = self._fresh_odom()
            if angular:
                progress += sign * wrap_angle(o.yaw - last_yaw)
                last_yaw = o.yaw
            else:  # distance along the starting heading
                progress = sign * ((o.x - start.x) * math.cos(start.yaw) + (o.y - start.y) * math.sin(start.yaw))
            remaining = goal - progress
            if remaining <= tol:
                break
            if d.now() > deadline:
                self._zero()
                unit = "deg" if angular else "m"
                done = math.degrees(progress) if angular else progress
                want = math.degrees(goal) if angular else goal
                return Outcome(False, False, f"{action}: timeout after {d.now() - t0:.1f} s, covered "
                                             f"{done:.3f} of {want:.3f} {unit} (blocked?)")
            speed = min(cruise, max(vmin, p.slowdown_gain * remaining))
            if angular:
                d.publish_velocity(0.0, sign * speed)
            else:
                d.publish_velocity(sign * speed, 0.0)
            d.sleep(period)
        self._zero()
        if angular:
            return Outcome(True, False, f"{action}: rotated {math.degrees(sign * progress):+.1f} deg "
                                        f"(odometry, {d.now() - t0:.2f} s)")
        return Outcome(True, False, f"{action}: moved {sign * progress:+.3f} m (odometry, {d.now() - t0:.2f} s)")

    def _tilt(self, action: str, meaning: str) -> Outcome:
        p, d = self.params, self.driver
        ok, why = d.has_tilt()
        if not ok:
            return Outcome(False, False, f"{action} ({meaning}) refused: {why}")
        cur = d.tilt_position()
        if cur is None:
            cur = math.radians(p.initial_tilt_deg) * p.tilt_down_sign
        # work in "degrees down" so limits and steps read like ai2thor's horizon
        down_now = math.degrees(cur) * p.tilt_down_sign
        step = p.tilt_step_deg if meaning == "look_down" else -p.tilt_step_deg
        down_new = min(p.tilt_max_deg, max(p.tilt_min_deg, down_now + step))
        if abs(down_new - down_now) < 0.5:
            return Outcome(False, False, f"{action} ({meaning}): camera tilt at its limit ({down_now:.1f} deg down)")
        target = math.radians(down_new) * p.tilt_down_sign
        d.tilt_to(target)
        return Outcome(True, False, f"{action} ({meaning}): camera tilt {down_now:.1f} -> {down_new:.1f} deg down")
