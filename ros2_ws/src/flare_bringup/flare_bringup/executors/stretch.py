"""FLaRe's 20 Stretch actions -> motions of a RobotDriver (pure Python: no rclpy, no torch).

Magnitudes are FLaRe's (flare_method.md section 1): base 0.2 m, rotation 30 deg / small 6 deg, lift and arm
0.1 m / small 0.02 m, wrist yaw 10 deg. Conventions on the real robot:

* Base rotation follows ROS REP 103 (counter-clockwise positive): `rotate_right` = -30 deg, `rotate_left` =
  +30 deg. (The simulator is left-handed, where rotate_right is +30.)
* Lift / arm / wrist actions are *absolute* targets computed from the current joint positions and clipped to
  the joint limits (as FLaRe's MoveArm targets are). A target that the clip turns into no motion is reported
  as a failure ("at its limit"), like the simulator reports an action that did not change the state.
* Wrist: `wrist_open` = current - 10 deg * wrist_yaw_sign, `wrist_close` = current + 10 deg * wrist_yaw_sign.
  FLaRe's simulator uses wrist_open = -10 deg; whether joint_wrist_yaw has the same handedness on a real RE1
  must be checked on the robot (flip `wrist_yaw_sign` to -1 if it does not).
* `pickup` is a heuristic grasp: close the gripper (FLaRe's GraspTo(-10), Robotis %) and report the object
  held if the fingers stop before closing (aperture >= grasp_min_aperture_m, and, if set, |effort| >=
  grasp_min_effort). `dropoff` opens (GraspTo(30)) and clears in-hand. `end` / `sub_done` never move.
* `start_pose` (protocol.START_POSE, sent by the policy before an episode's first step) puts the robot in the
  pose FLaRe's simulated agent starts from (environment/stretch_controller.py calibrate_agent in
  JiahengHu/FLaRe): the navigation camera pitched 27 deg down (head tilt -27 deg, pan 0 = looking ahead) and
  the gripper at openness 30 (SetGripperOpenness(30), our gripper_open_pct). FLaRe's code sets no arm pose;
  the arm starts retracted there, so the arm is retracted (0 m), the wrist at `start_wrist_yaw_deg` and the
  lift at `start_lift_m` (our choice, to confirm on the robot). The arm retracts first, then the lift, wrist,
  gripper and head move, each to a target clipped to the limits.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Optional

from flare_policy.embodiments import NO_MOTION_ACTIONS, STRETCH_ACTIONS
from flare_policy.protocol import START_POSE

from .base import (
    JOINT_ARM, JOINT_HEAD_PAN, JOINT_HEAD_TILT, JOINT_LIFT, JOINT_WRIST_YAW, DriverError, DriverExecutor, HaltFlag,
    JointLimit, MotionInterrupted, Outcome, RobotDriver,
)

# Conservative RE1 limits, used for a joint until the backend reports its real limits.
DEFAULT_LIMITS = {
    JOINT_LIFT: JointLimit(0.0, 1.1),
    JOINT_ARM: JointLimit(0.0, 0.52),
    JOINT_WRIST_YAW: JointLimit(-1.75, 4.0),
    JOINT_HEAD_PAN: JointLimit(-3.9, 1.5),     # conservative head ranges (rad); negative tilt looks down
    JOINT_HEAD_TILT: JointLimit(-1.5, 0.75),
}


@dataclass
class StretchParams:
    move_m: float = 0.2
    rotate_deg: float = 30.0
    rotate_small_deg: float = 6.0
    lift_step_m: float = 0.1
    lift_step_small_m: float = 0.02
    arm_step_m: float = 0.1
    arm_step_small_m: float = 0.02
    wrist_step_deg: float = 10.0
    wrist_yaw_sign: float = 1.0
    gripper_close_pct: float = -10.0   # FLaRe robot_action_mapping GraspTo(move_to=-10)
    gripper_open_pct: float = 30.0     # GraspTo(move_to=30)
    grasp_min_aperture_m: float = 0.005
    grasp_min_effort: float = 0.0      # 0 = do not use effort
    min_joint_change_m: float = 0.001
    min_wrist_change_deg: float = 0.5
    start_head_pan_deg: float = 0.0     # looking ahead
    start_head_tilt_deg: float = -27.0  # FLaRe calibrate_agent: navigation camera 27 deg down
    start_lift_m: float = 0.7
    start_arm_m: float = 0.0            # retracted
    start_wrist_yaw_deg: float = 0.0

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def validate(self) -> "StretchParams":
        for name in ("move_m", "rotate_deg", "rotate_small_deg", "lift_step_m", "lift_step_small_m",
                     "arm_step_m", "arm_step_small_m", "wrist_step_deg"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v}")
        if self.wrist_yaw_sign not in (1.0, -1.0):
            raise ValueError(f"wrist_yaw_sign must be 1.0 or -1.0, got {self.wrist_yaw_sign}")
        if self.gripper_close_pct >= self.gripper_open_pct:
            raise ValueError("gripper_close_pct must be below gripper_open_pct")
        return self


@dataclass(frozen=True)
class Motion:
    """One planned robot motion for an action."""
    kind: str                 # 'translate' | 'rotate' | 'joint' | 'gripper' | 'none'
    joint: str = ""
    value: float = 0.0        # translate/rotate: relative amount; joint: absolute target
    command: str = ""         # gripper: 'open' | 'close'
    note: str = ""


def action_deltas(p: StretchParams) -> dict[str, tuple[str, str, float]]:
    """action -> (kind, joint, delta). Relative deltas; joint actions are turned into absolute targets."""
    rot, small = math.radians(p.rotate_deg), math.radians(p.rotate_small_deg)
    wrist = math.radians(p.wrist_step_deg) * p.wrist_yaw_sign
    return {
        "move_ahead": ("translate", "", +p.move_m),
        "move_back": ("translate", "", -p.move_m),
        "rotate_right": ("rotate", "", -rot),        # REP 103: right turn = negative yaw
        "rotate_left": ("rotate", "", +rot),
        "rotate_right_small": ("rotate", "", -small),
        "rotate_left_small": ("rotate", "", +small),
        "move_arm_up": ("joint", JOINT_LIFT, +p.lift_step_m),
        "move_arm_down": ("joint", JOINT_LIFT, -p.lift_step_m),
        "move_arm_up_small": ("joint", JOINT_LIFT, +p.lift_step_small_m),
        "move_arm_down_small": ("joint", JOINT_LIFT, -p.lift_step_small_m),
        "move_arm_out": ("joint", JOINT_ARM, +p.arm_step_m),
        "move_arm_in": ("joint", JOINT_ARM, -p.arm_step_m),
        "move_arm_out_small": ("joint", JOINT_ARM, +p.arm_step_small_m),
        "move_arm_in_small": ("joint", JOINT_ARM, -p.arm_step_small_m),
        "wrist_open": ("joint", JOINT_WRIST_YAW, -wrist),   # simulator: wrist_open = -10 deg
        "wrist_close": ("joint", JOINT_WRIST_YAW, +wrist),
        "pickup": ("gripper", "", 0.0),
        "dropoff": ("gripper", "", 0.0),
        "end": ("none", "", 0.0),
        "sub_done": ("none", "", 0.0),
    }


class Refused(Exception):
    """The action cannot run now (unknown action, joint at its limit, state unknown); nothing moved."""


def plan_motion(action: str, params: StretchParams, positions: dict[str, float],
                limits: dict[str, JointLimit]) -> Motion:
    """Pure planning step: the motion an action maps to, given current positions and limits."""
    table = action_deltas(params)
    if action not in table:
        raise Refused(f"unknown action {action!r} (Stretch actions: {', '.join(STRETCH_ACTIONS)})")
    kind, joint, delta = table[action]
    if kind in ("translate", "rotate"):
        return Motion(kind, value=delta)
    if kind == "none":
        return Motion("none", note=f"{action}: no motion")
    if kind == "gripper":
        return Motion("gripper", command="close" if action == "pickup" else "open")
    if joint not in positions or positions[joint] is None or not math.isfinite(positions[joint]):
        raise Refused(f"{action}: current position of {joint} is unknown")
    limit = limits.get(joint) or DEFAULT_LIMITS[joint]
    current = positions[joint]
    raw = current + delta
    target = limit.clip(raw)
    min_change = math.radians(params.min_wrist_change_deg) if joint == JOINT_WRIST_YAW else params.min_joint_change_m
    if abs(target - current) < min_change:
        which = "upper" if delta > 0 else "lower"
        raise Refused(f"{action}: {joint} is at its {which} limit "
                      f"({current:.3f}, limits [{limit.lower:.3f}, {limit.upper:.3f}])")
    note = ""
    if target != raw:
        note = f"clipped {raw:.3f} to {target:.3f} (limits [{limit.lower:.3f}, {limit.upper:.3f}])"
    return Motion("joint", joint=joint, value=target, note=note)


class StretchExecutor(DriverExecutor):
    """Executes one FLaRe action at a time on a RobotDriver and tracks whether an object is held."""

    robot = "stretch"

    def __init__(self, driver: RobotDriver, params: Optional[StretchParams] = None, logger=None,
                 default_limits: Optional[dict[str, JointLimit]] = None):
        self.driver = driver
        self.params = (params or StretchParams()).validate()
        # used for a joint until the backend reports its real limits
        self.default_limits = dict(DEFAULT_LIMITS)
        self.default_limits.update(default_limits or {})
        self.in_hand = False
        self._halt = HaltFlag()
        self._log = logger

    # -- interface used by ExecutorNode ---------------------------------------------------------------
    @property
    def actions(self) -> tuple[str, ...]:
        return STRETCH_ACTIONS

    def validate(self, action: str) -> Optional[str]:
        """None if the action exists, else a refusal message (nothing is executed)."""
        if action not in STRETCH_ACTIONS and action != START_POSE:
            return f"unknown action {action!r} for stretch"
        return None

    def start_pose(self) -> list[tuple[str, float]]:
        """(joint, absolute target) in execution order, clipped to the limits."""
        p, limits = self.params, self._limits()
        pose = [(JOINT_ARM, p.start_arm_m), (JOINT_LIFT, p.start_lift_m),
                (JOINT_WRIST_YAW, math.radians(p.start_wrist_yaw_deg)),
                (JOINT_HEAD_PAN, math.radians(p.start_head_pan_deg)),
                (JOINT_HEAD_TILT, math.radians(p.start_head_tilt_deg))]
        return [(j, (limits.get(j) or DEFAULT_LIMITS[j]).clip(v)) for j, v in pose]

    def _start_pose(self) -> Outcome:
        t0 = time.monotonic()
        done = []
        try:
            for joint, target in self.start_pose():
                if self._halt.is_set():
                    raise MotionInterrupted(self._halt.reason)
                self.driver.move_joint_to(joint, target)
                done.append(f"{joint} {target:+.3f}")
            if self._halt.is_set():
                raise MotionInterrupted(self._halt.reason)
            self.driver.gripper("open")
            self.in_hand = False
        except MotionInterrupted as e:
            return Outcome(False, self.in_hand, f"start_pose interrupted: {self._halt.reason or e}")
        except DriverError as e:
            if self._halt.is_set():
                return Outcome(False, self.in_hand, f"start_pose interrupted: {self._halt.reason}")
            return Outcome(False, self.in_hand, f"start_pose failed after [{', '.join(done)}]: {e}")
        return Outcome(True, False, f"start_pose: {', '.join(done)}, gripper open ({time.monotonic() - t0:.2f} s)")

    def execute(self, action: str) -> Outcome:
        self._halt.clear()
        err = self.validate(action)
        if err:
            return Outcome(False, self.in_hand, err)
        if action == START_POSE:
            return self._start_pose()
        if action in NO_MOTION_ACTIONS:
            return Outcome(True, self.in_hand, f"{action}: no motion")
        try:
            motion = plan_motion(action, self.params, self.driver.joint_positions(), self._limits())
        except Refused as e:
            return Outcome(False, self.in_hand, str(e))
        except DriverError as e:
            return Outcome(False, self.in_hand, f"{action}: {e}")
        t0 = time.monotonic()
        try:
            msg = self._run(action, motion)
        except MotionInterrupted as e:
            return Outcome(False, self.in_hand, f"{action} interrupted: {self._halt.reason or e}")
        except DriverError as e:
            if self._halt.is_set():
                return Outcome(False, self.in_hand, f"{action} interrupted: {self._halt.reason}")
            return Outcome(False, self.in_hand, f"{action} failed: {e}")
        if self._halt.is_set():
            return Outcome(False, self.in_hand, f"{action} interrupted: {self._halt.reason}")
        ok = True
        if action == "pickup":
            ok = self.in_hand
        return Outcome(ok, self.in_hand, f"{msg} ({time.monotonic() - t0:.2f} s)")

    # -- internals ------------------------------------------------------------------------------------
    def _limits(self) -> dict[str, JointLimit]:
        limits = dict(self.default_limits)
        try:
            limits.update({k: v for k, v in self.driver.joint_limits().items() if v is not None})
        except DriverError:
            pass
        return limits

    def _run(self, action: str, m: Motion) -> str:
        d = self.driver
        if self._halt.is_set():
            raise MotionInterrupted(self._halt.reason)
        if m.kind == "translate":
            d.translate_base(m.value)
            return f"{action}: base translated {m.value:+.3f} m"
        if m.kind == "rotate":
            d.rotate_base(m.value)
            return f"{action}: base rotated {math.degrees(m.value):+.1f} deg"
        if m.kind == "joint":
            d.move_joint_to(m.joint, m.value)
            unit = "rad" if m.joint == JOINT_WRIST_YAW else "m"
            return f"{action}: {m.joint} -> {m.value:.3f} {unit}" + (f"; {m.note}" if m.note else "")
        if m.kind == "gripper":
            reading = d.gripper(m.command)
            if m.command == "close":
                self.in_hand = self._held(reading)
                what = "object held" if self.in_hand else "nothing grasped"
                return (f"{action}: {what} (fingers stopped at {reading.aperture_m * 1000:.1f} mm"
                        + (f", effort {reading.effort:.1f}" if reading.effort is not None else "") + ")")
            self.in_hand = False
            return f"{action}: gripper opened ({reading.aperture_m * 1000:.1f} mm)"
        return f"{action}: no motion"

    def _held(self, reading) -> bool:
        p = self.params
        if reading.aperture_m is None or not math.isfinite(reading.aperture_m):
            return False
        held = reading.aperture_m >= p.grasp_min_aperture_m
        if held and p.grasp_min_effort > 0:
            held = reading.effort is not None and abs(reading.effort) >= p.grasp_min_effort
        return held
