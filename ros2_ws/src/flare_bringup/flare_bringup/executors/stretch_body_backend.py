"""Stretch backend directly through Hello Robot's `stretch_body` (no stretch_driver).

* `stretch_body.robot` is imported lazily, inside `start()`: importing it reads the robot's fleet calibration
  (HELLO_FLEET_PATH / HELLO_FLEET_ID) and exits the process when it is missing, and the package is far too heavy
  for CI. All failures become `DriverUnavailable` with a message saying what to do.
* `Robot.startup()` takes an exclusive lock; it returns False when another process holds it -- typically
  `stretch_driver`. The two backends can therefore never run together: pick one per run.
* Base: `base.translate_by` / `base.rotate_by` + `push_command()`; lift / arm: `move_to` + `push_command()`;
  wrist yaw and gripper (Dynamixel) move immediately via `end_of_arm.move_to`. Each motion waits for
  completion (`wait_command`), then checks the halt flag. `stop()` commands zero-length moves on the base, lift,
  arm, wrist and head, which ends a running wait, but never on the gripper: a zero-length gripper move
  commands the fingers to where they are and so releases the squeeze on a held object (what stretch_driver's
  /stop_the_robot does). `close()` calls `robot.stop()`.
* Head (start pose): `head.move_to('head_pan' | 'head_tilt', rad)` (Dynamixel, immediate).
* Runstop: `get_status()['pimu']['runstop_event']`; homing: `is_homed()`.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, fields
from typing import Callable, Optional

from .base import (
    GRIPPER_APERTURE, JOINT_ARM, JOINT_HEAD_PAN, JOINT_HEAD_TILT, JOINT_LIFT, JOINT_WRIST_YAW, DriverError,
    DriverUnavailable, GripperReading, JointLimit, MotionInterrupted, RobotDriver, robotis_to_aperture, wait_until_settled,
)

LOCK_HINT = ("another process is already using Stretch (stretch_body's robot lock is held, usually by "
             "stretch_driver or a stretch_*.py tool): stop it first (e.g. `stretch_free_robot_process.py`), or "
             "use backend:=driver to go through stretch_driver instead")


@dataclass
class BodyBackendConfig:
    motion_timeout_s: float = 15.0
    gripper_close_pct: float = -10.0
    gripper_open_pct: float = 30.0
    gripper_settle_s: float = 0.3
    gripper_timeout_s: float = 4.0
    require_homed: bool = True

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def _default_robot_factory():
    try:
        import stretch_body.robot as rb  # heavy; reads the fleet calibration at import
    except ModuleNotFoundError as e:
        raise DriverUnavailable(
            "stretch_body is not installed: on the robot, `pip install hello-robot-stretch-body` (it is "
            "preinstalled on a Stretch), or use backend:=driver (stretch_driver) or backend:=fake (dry run)") from e
    except KeyError as e:
        raise DriverUnavailable(
            f"stretch_body needs the environment variable {e} (HELLO_FLEET_PATH and HELLO_FLEET_ID; they are "
            "set in the robot user's ~/.bashrc -- source it, or pass them into the container)") from e
    except SystemExit as e:
        raise DriverUnavailable(
            "stretch_body could not load the robot calibration (HELLO_FLEET_PATH/HELLO_FLEET_ID point to a "
            f"missing or incomplete fleet directory; exit code {e.code})") from e
    return rb.Robot()


class StretchBodyBackend(RobotDriver):
    """RobotDriver over stretch_body. `robot_factory` returns a `stretch_body.robot.Robot`-like object."""

    name = "body"

    def __init__(self, config: Optional[BodyBackendConfig] = None,
                 robot_factory: Optional[Callable[[], object]] = None, log: Optional[Callable[[str], None]] = None):
        self.cfg = config or BodyBackendConfig()
        self._factory = robot_factory or _default_robot_factory
        self.robot = None
        self._halt = threading.Event()
        self._lock = threading.RLock()
        self._log = log

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> None:
        robot = self._factory()
        try:
            ok = robot.startup()
        except Exception as e:
            raise DriverUnavailable(f"stretch_body Robot.startup() failed: {e}") from e
        if ok is False:
            raise DriverUnavailable(f"stretch_body Robot.startup() returned False: {LOCK_HINT}")
        self.robot = robot

    def close(self) -> None:
        r, self.robot = self.robot, None
        if r is not None:
            try:
                r.stop()  # releases the robot lock and joins stretch_body's threads
            except Exception as e:
                if self._log:
                    self._log(f"stretch_body Robot.stop() failed: {e}")

    # -- state ----------------------------------------------------------------------------------------------
    def _status(self) -> dict:
        if self.robot is None:
            raise DriverError("stretch_body robot not started")
        return self.robot.get_status()

    def is_ready(self) -> tuple[bool, str]:
        if self.robot is None:
            return False, "stretch_body robot not started"
        try:
            if self.is_runstopped():
                return False, "runstop is engaged (press the glowing head button to release)"
            if self.cfg.require_homed and hasattr(self.robot, "is_homed") and not self.robot.is_homed():
                return False, "robot is not homed (run stretch_robot_home.py)"
        except Exception as e:
            return False, f"stretch_body status unavailable: {e}"
        return True, ""

    def is_runstopped(self) -> bool:
        if self.robot is None:
            return False
        return bool(self._status().get("pimu", {}).get("runstop_event", False))

    def joint_positions(self) -> dict[str, float]:
        s = self._status()
        out = {}
        try:
            out[JOINT_LIFT] = float(s["lift"]["pos"])
            out[JOINT_ARM] = float(s["arm"]["pos"])
            eoa = s.get("end_of_arm", {})
            if "wrist_yaw" in eoa:
                out[JOINT_WRIST_YAW] = float(eoa["wrist_yaw"]["pos"])
            if "stretch_gripper" in eoa:
                out[GRIPPER_APERTURE] = robotis_to_aperture(float(eoa["stretch_gripper"]["pos_pct"]))
            head = s.get("head", {})
            for joint, key in ((JOINT_HEAD_PAN, "head_pan"), (JOINT_HEAD_TILT, "head_tilt")):
                if key in head:
                    out[joint] = float(head[key]["pos"])
        except (KeyError, TypeError) as e:
            raise DriverError(f"unexpected stretch_body status layout: missing {e}") from e
        return out

    def joint_limits(self) -> dict[str, JointLimit]:
        out = {}
        r = self.robot
        if r is None:
            return out
        for joint, dev in ((JOINT_LIFT, getattr(r, "lift", None)), (JOINT_ARM, getattr(r, "arm", None))):
            try:
                lo, hi = dev.params["range_m"]
                out[joint] = JointLimit(float(lo), float(hi))
            except Exception:
                pass
        try:
            m = r.end_of_arm.motors["wrist_yaw"]
            a, b = (m.ticks_to_world_rad(t) for t in m.params["range_t"])
            out[JOINT_WRIST_YAW] = JointLimit(min(a, b), max(a, b))
        except Exception:
            pass
        return out

    # -- motions ----------------------------------------------------------------------------------------------
    def translate_base(self, meters: float) -> None:
        self._stepper(lambda r: r.base.translate_by(meters))

    def rotate_base(self, radians: float) -> None:
        self._stepper(lambda r: r.base.rotate_by(radians))

    def move_joint_to(self, joint: str, target: float) -> None:
        if joint == JOINT_LIFT:
            self._stepper(lambda r: r.lift.move_to(target))
        elif joint == JOINT_ARM:
            self._stepper(lambda r: r.arm.move_to(target))
        elif joint == JOINT_WRIST_YAW:
            self._dynamixel(lambda r: r.end_of_arm.move_to("wrist_yaw", target))
        elif joint in (JOINT_HEAD_PAN, JOINT_HEAD_TILT):
            key = "head_pan" if joint == JOINT_HEAD_PAN else "head_tilt"
            self._dynamixel(lambda r: r.head.move_to(key, target))
        else:
            raise DriverError(f"unsupported joint {joint}")

    def gripper(self, command: str) -> GripperReading:
        if command not in ("open", "close"):
            raise DriverError(f"bad gripper command {command!r}")
        pct = self.cfg.gripper_close_pct if command == "close" else self.cfg.gripper_open_pct
        self._begin()
        with self._lock:
            self.robot.end_of_arm.move_to("stretch_gripper", pct)

        def aperture() -> Optional[float]:
            return self.joint_positions().get(GRIPPER_APERTURE)

        final = wait_until_settled(aperture, tolerance=0.0005, settle_s=self.cfg.gripper_settle_s,
                                   timeout_s=self.cfg.gripper_timeout_s, halted=self._halt.is_set)
        self._end()
        effort = None
        try:
            effort = float(self._status()["end_of_arm"]["stretch_gripper"]["effort"])
        except Exception:
            pass
        if final is None:
            raise DriverError("gripper position unknown")
        return GripperReading(final, effort)

    def stop(self) -> None:
        self._halt.set()
        r = self.robot
        if r is None:
            return
        with self._lock:
            # no gripper here: see the module docstring (a held object would slip)
            for f in (lambda: r.base.translate_by(0.0), lambda: r.base.rotate_by(0.0), lambda: r.arm.move_by(0.0),
                      lambda: r.lift.move_by(0.0), lambda: r.end_of_arm.move_by("wrist_yaw", 0.0),
                      lambda: r.head.move_by("head_pan", 0.0), lambda: r.head.move_by("head_tilt", 0.0),
                      r.push_command):
                try:
                    f()
                except Exception:
                    pass

    # -- internals --------------------------------------------------------------------------------------------
    def _begin(self) -> None:
        if self.robot is None:
            raise DriverError("stretch_body robot not started")
        self._halt.clear()
        if self.is_runstopped():
            raise MotionInterrupted("runstop is engaged")

    def _end(self) -> None:
        if self._halt.is_set():
            raise MotionInterrupted("halted")
        if self.is_runstopped():
            raise MotionInterrupted("runstop engaged during the motion")

    def _stepper(self, command) -> None:
        """Base / lift / arm: queue, push (steppers move only on push_command), wait."""
        self._begin()
        with self._lock:
            command(self.robot)
            self.robot.push_command()
        done = self.robot.wait_command(timeout=self.cfg.motion_timeout_s)
        self._end()
        if done is False:
            raise DriverError(f"motion did not finish within {self.cfg.motion_timeout_s:.0f} s")

    def _dynamixel(self, command) -> None:
        """Wrist yaw: moves immediately; wait for it like the steppers."""
        self._begin()
        with self._lock:
            command(self.robot)
        time.sleep(0.05)
        done = self.robot.wait_command(timeout=self.cfg.motion_timeout_s)
        self._end()
        if done is False:
            raise DriverError(f"wrist motion did not finish within {self.cfg.motion_timeout_s:.0f} s")
