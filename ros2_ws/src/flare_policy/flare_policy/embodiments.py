"""Embodiments: the ordered action sets a policy head is trained for, and which actions a robot may execute.

Pure Python (no torch, no rclpy) so executors, the simulator and the policy all share one definition.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# FLaRe / SPOC Stretch action order (head rows 0-19), fixed by the released checkpoints.
STRETCH_ACTIONS = (
    "move_ahead", "rotate_right", "rotate_left", "move_back", "end", "sub_done",
    "rotate_left_small", "rotate_right_small", "pickup", "move_arm_in", "move_arm_out",
    "move_arm_up", "move_arm_down", "wrist_open", "wrist_close", "move_arm_down_small",
    "move_arm_in_small", "move_arm_out_small", "move_arm_up_small", "dropoff",
)
# FLaRe's short names, same order (used by the original task code).
STRETCH_SHORT_NAMES = (
    "m", "r", "l", "b", "end", "sub_done", "ls", "rs", "p", "zm", "zp", "yp", "ym", "wp", "wm",
    "yms", "zms", "zps", "yps", "d",
)

# Mini-CHORES simulator actions (named like the robot's).
SIM_ACTIONS = ("move_ahead", "rotate_left", "rotate_right", "pickup", "dropoff", "toggle", "end", "sub_done")

TERMINAL_ACTION = "end"
NO_MOTION_ACTIONS = frozenset({"end", "sub_done"})


@dataclass(frozen=True)
class Embodiment:
    name: str
    actions: tuple[str, ...]
    cameras: tuple[str, ...]
    allowed: frozenset[str] = field(default_factory=frozenset)  # empty = all actions allowed
    # Actions whose meaning on this robot differs from their name (e.g. LoCoBot camera tilt).
    reinterpreted: dict[str, str] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self):
        unknown = set(self.allowed) - set(self.actions)
        if unknown:
            raise ValueError(f"embodiment {self.name!r}: allowed actions not in its action set: {sorted(unknown)}")

    def action_mask(self) -> list[bool]:
        """True where the action may be executed (ordered like `actions`)."""
        return [not self.allowed or a in self.allowed for a in self.actions]

    def is_allowed(self, action: str) -> bool:
        return action in self.actions and (not self.allowed or action in self.allowed)


EMBODIMENTS: dict[str, Embodiment] = {
    "stretch": Embodiment(
        name="stretch",
        actions=STRETCH_ACTIONS,
        cameras=("raw_navigation_camera", "raw_manipulation_camera"),
        description="Hello Robot Stretch RE1, FLaRe's 20 discrete actions, head D435i + gripper D405",
    ),
    # LoCoBot runs the Stretch head with everything but navigation masked; FLaRe reuses the small rotations
    # as camera tilt (flare_method.md section 9).
    "locobot": Embodiment(
        name="locobot",
        actions=STRETCH_ACTIONS,
        cameras=("raw_navigation_camera",),
        allowed=frozenset({"move_ahead", "rotate_left", "rotate_right", "end",
                           "rotate_left_small", "rotate_right_small"}),
        reinterpreted={"rotate_left_small": "look_up", "rotate_right_small": "look_down"},
        description="LoCoBot (Interbotix, Create 3 base): navigation only, small rotations = camera tilt",
    ),
    "sim": Embodiment(
        name="sim",
        actions=SIM_ACTIONS,
        cameras=("raw_navigation_camera",),
        description="mini-CHORES (MiniGrid/BabyAI) robot: egocentric RGB navigation camera",
    ),
    # Second sim embodiment standing in for LoCoBot (paper Q4): navigation only, a narrower camera (the env's
    # 5x5-cell view) that pans independently of the base, panned by two reinterpreted actions (as the real
    # LoCoBot reinterprets two rotations as camera tilt); toggle/sub_done are masked.
    "sim_locobot": Embodiment(
        name="sim_locobot",
        actions=SIM_ACTIONS,
        cameras=("raw_navigation_camera",),
        allowed=frozenset({"move_ahead", "rotate_left", "rotate_right", "end", "pickup", "dropoff"}),
        reinterpreted={"pickup": "look_left", "dropoff": "look_right"},
        description="mini-CHORES LoCoBot stand-in: navigation actions, narrow camera panned by look_left/right",
    ),
}


def get_embodiment(name: str) -> Embodiment:
    try:
        return EMBODIMENTS[name]
    except KeyError:
        raise ValueError(f"unknown embodiment {name!r}; known: {sorted(EMBODIMENTS)}") from None
