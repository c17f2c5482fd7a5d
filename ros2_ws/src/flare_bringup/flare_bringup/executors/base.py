"""The robot-driver interface every executor is written against (pure Python: no rclpy, no torch).

Layering::

    ExecutorNode (rclpy: topics, readiness, runstop, signals)
        -> StretchExecutor / LocobotExecutor   (FLaRe action -> motion, magnitudes, limits, grasp heuristic)
            -> RobotDriver / LocobotDriver     (one backend per way of talking to the hardware)
                 StretchDriverBackend (stretch_driver over ROS 2), StretchBodyBackend (stretch_body),
                 LocobotRosBackend (Twist + odometry + Interbotix tilt), Fake* (dry runs, tests)

All drivers are *blocking*: a motion call returns once the motion has finished (or raises). They must be
interruptible from another thread through `stop()`, which makes the blocked call raise `MotionInterrupted`.
"""
from __future__ import annotations

import abc
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

# Joint names (stretch_driver's names; every Stretch backend reports positions under these keys).
JOINT_LIFT = "joint_lift"            # m
JOINT_ARM = "wrist_extension"        # m (sum of the four telescoping joint_arm_l*)
JOINT_WRIST_YAW = "joint_wrist_yaw"  # rad
JOINT_HEAD_PAN = "joint_head_pan"    # rad (start pose only; the policy never moves the head)
JOINT_HEAD_TILT = "joint_head_tilt"  # rad, negative looks down
GRIPPER_APERTURE = "gripper_aperture"  # m between the fingertips (0 = touching, < 0 = squeezing)
STRETCH_JOINTS = (JOINT_LIFT, JOINT_ARM, JOINT_WRIST_YAW)

# Stretch gripper unit conversions (hello_helpers/gripper_conversion.py): Robotis percentage 0 ~ closed,
# 70 ~ an aperture of 0.09 m; fingertip 0.9 * 0.19011 m from the finger joint.
GRIPPER_OPEN_APERTURE_M = 0.09
GRIPPER_OPEN_ROBOTIS = 70.0
GRIPPER_FINGER_LENGTH_M = 0.9 * 0.19011


def robotis_to_aperture(pct: float) -> float:
    return pct * GRIPPER_OPEN_APERTURE_M / GRIPPER_OPEN_ROBOTIS


def aperture_to_robotis(aperture_m: float) -> float:
    return aperture_m * GRIPPER_OPEN_ROBOTIS / GRIPPER_OPEN_APERTURE_M


def finger_rad_to_aperture(finger_rad: float) -> float:
    return 2.0 * finger_rad * GRIPPER_FINGER_LENGTH_M


def aperture_to_finger_rad(aperture_m: float) -> float:
    return aperture_m / (2.0 * GRIPPER_FINGER_LENGTH_M)


class DriverError(RuntimeError):
    """A motion or a query failed (rejected goal, timeout, hardware fault)."""


class DriverUnavailable(DriverError):
    """The backend cannot run here (library missing, robot busy, driver not running); the message says why."""


class MotionInterrupted(DriverError):
    """The running motion was stopped (stop command, runstop, shutdown)."""


@dataclass(frozen=True)
class JointLimit:
    lower: float
    upper: float

    def __post_init__(self):
        if not (math.isfinite(self.lower) and math.isfinite(self.upper)) or self.lower > self.upper:
            raise ValueError(f"invalid joint limit [{self.lower}, {self.upper}]")

    def clip(self, value: float) -> float:
        return min(self.upper, max(self.lower, value))


@dataclass(frozen=True)
class GripperReading:
    """Gripper state after a gripper motion has settled."""
    aperture_m: float
    effort: Optional[float] = None  # backend units (stretch: Robotis effort %), None if unknown


@dataclass(frozen=True)
class Outcome:
    """What an executor reports for one command (becomes a protocol.CommandResult)."""
    success: bool
    in_hand: bool
    message: str = ""


class RobotDriver(abc.ABC):
    """Backend interface for a Stretch-like robot (base, lift, telescoping arm, wrist yaw, gripper)."""

    name = "driver"

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect to the robot. Raises DriverUnavailable with a clear message if that is impossible."""

    def close(self) -> None:
        """Release the robot (called once, after stop(), on shutdown)."""

    @abc.abstractmethod
    def is_ready(self) -> tuple[bool, str]:
        """(True, "") when the robot accepts motions, else (False, reason)."""

    def is_runstopped(self) -> bool:
        """True while the robot's own runstop is engaged (backends that can see it)."""
        return False

    @abc.abstractmethod
    def joint_positions(self) -> dict[str, float]:
        """Current positions keyed by JOINT_* / GRIPPER_APERTURE names."""

    @abc.abstractmethod
    def joint_limits(self) -> dict[str, JointLimit]:
        """Limits keyed by JOINT_* names (at least JOINT_LIFT, JOINT_ARM, JOINT_WRIST_YAW)."""

    @abc.abstractmethod
    def translate_base(self, meters: float) -> None:
        """Drive straight by `meters` (relative; forward positive). Blocks until done."""

    @abc.abstractmethod
    def rotate_base(self, radians: float) -> None:
        """Turn in place by `radians` (relative; REP 103: counter-clockwise/left positive). Blocks until done."""

    @abc.abstractmethod
    def move_joint_to(self, joint: str, target: float) -> None:
        """Move one joint (JOINT_*, head joints included) to an absolute target (already clipped by the caller).
        Blocks until done."""

    @abc.abstractmethod
    def gripper(self, command: str) -> GripperReading:
        """'open' or 'close' the gripper; blocks until the fingers stop, then reports where they stopped."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Halt every motion now (thread-safe, non-blocking-ish); a blocked motion call then raises. Must not
        open or relax the gripper: an object it holds must stay held."""


def wait_until_settled(read: Callable[[], Optional[float]], *, tolerance: float, settle_s: float,
                       timeout_s: float, halted: Callable[[], bool] = lambda: False,
                       period_s: float = 0.05, clock: Callable[[], float] = time.monotonic,
                       sleep: Callable[[float], None] = time.sleep, min_wait_s: float = 0.3) -> Optional[float]:
    """Poll `read()` until it changes by less than `tolerance` for `settle_s` (or timeout); return last value.

    Used for the gripper: a closing gripper that meets an object stops early and never reaches its target,
    so "done" means "the fingers stopped moving", not "the goal was reached".
    """
    start = clock()
    last = read()
    stable_since = start
    while True:
        if halted():
            raise MotionInterrupted("halted while waiting for the gripper")
        sleep(period_s)
        now = clock()
        cur = read()
        if cur is None or last is None or abs(cur - last) > tolerance:
            stable_since = now
        last = cur if cur is not None else last
        if now - start >= min_wait_s and now - stable_since >= settle_s:
            return last
        if now - start >= timeout_s:
            return last


class HaltFlag:
    """A resettable halt flag with the reason of the last halt."""

    def __init__(self):
        self._event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        self.reason = reason
        self._event.set()

    def clear(self) -> None:
        self.reason = ""
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


def wrap_angle(a: float) -> float:
    """Wrap to [-pi, pi)."""
    return (a + math.pi) % (2.0 * math.pi) - math.pi


class DriverExecutor:
    """What every executor does the same way with its driver: readiness, runstop and halting.

    Subclasses set `driver`, `_halt` (HaltFlag) and `_log` (a logger or None)."""

    def is_ready(self) -> tuple[bool, str]:
        return self.driver.is_ready()

    def is_runstopped(self) -> bool:
        return self.driver.is_runstopped()

    def halt(self, reason: str) -> None:
        """Stop the running motion (if any) from any thread."""
        self._halt.set(reason)
        try:
            self.driver.stop()
        except Exception as e:  # stopping must never raise into the caller
            self._warn(f"driver.stop() failed: {e}")

    def _warn(self, msg: str) -> None:
        if self._log is not None:
            self._log.warning(msg)
