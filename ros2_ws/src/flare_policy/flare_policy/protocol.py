"""The command protocol between the policy node and a robot executor (pure Python: no torch, no rclpy).

All messages are `std_msgs/String` carrying one JSON object, so `ros2 topic echo` shows them readably.

policy -> executor, on `command_topic` (default /flare/command):
    {"id": 12, "action": "move_ahead", "episode": 3}
    {"id": 13, "action": "stop", "episode": 3}        # halt now; never acknowledged as a motion
    {"id": 14, "action": "start_pose", "episode": 4}  # before an episode's first step: the pose the policy
                                                      # was trained from (head aimed, arm stowed); acknowledged
executor -> policy, on `result_topic` (default /flare/command_result):
    {"id": 12, "action": "move_ahead", "success": true, "in_hand": false, "stamp": 1700000000.25,
     "message": ""}
executor -> policy, on `ready_topic` (default /flare/robot_ready, std_msgs/Bool, transient local):
    false while the robot cannot move (runstop, homing, driver down); the policy pauses its episode
    clock and never sends commands then.

Exactly one command is outstanding at a time: the policy waits for the result with the same id, then
for a camera frame stamped after `stamp`, before it infers the next action.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

COMMAND_TOPIC = "/flare/command"
RESULT_TOPIC = "/flare/command_result"
READY_TOPIC = "/flare/robot_ready"
GOAL_TOPIC = "/flare/goal"
STATUS_TOPIC = "/flare/status"
OUTCOME_TOPIC = "/flare/episode_outcome"

STOP = "stop"  # not a policy action: every executor halts all motion on it
START_POSE = "start_pose"  # not a policy action: move to the episode start pose, answered like a motion
MAX_MESSAGE_CHARS = 4096


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the receiver logs it and ignores the message."""


def _load(text: str, kind: str) -> dict:
    if not isinstance(text, str) or len(text) > MAX_MESSAGE_CHARS:
        raise ProtocolError(f"{kind}: not a JSON string of at most {MAX_MESSAGE_CHARS} characters")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"{kind}: invalid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{kind}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _field(obj: dict, name: str, types, kind: str):
    if name not in obj:
        raise ProtocolError(f"{kind}: missing field {name!r}")
    val = obj[name]
    if isinstance(val, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ProtocolError(f"{kind}: field {name!r} must be {types}, got bool")
    if not isinstance(val, types):
        raise ProtocolError(f"{kind}: field {name!r} has type {type(val).__name__}")
    return val


@dataclass(frozen=True)
class Command:
    id: int
    action: str
    episode: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Command":
        o = _load(text, "command")
        cid = _field(o, "id", int, "command")
        action = _field(o, "action", str, "command")
        episode = o.get("episode", 0)
        if not isinstance(episode, int) or isinstance(episode, bool):
            raise ProtocolError("command: field 'episode' must be an integer")
        if not action or len(action) > 64:
            raise ProtocolError("command: empty or overlong action name")
        return cls(cid, action, episode)


@dataclass(frozen=True)
class CommandResult:
    id: int
    action: str
    success: bool
    in_hand: bool
    stamp: float  # seconds, executor clock, when the motion finished
    message: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "CommandResult":
        o = _load(text, "command result")
        k = "command result"
        stamp = _field(o, "stamp", (int, float), k)
        if not math.isfinite(stamp):
            raise ProtocolError("command result: stamp is not finite")
        return cls(_field(o, "id", int, k), _field(o, "action", str, k), _field(o, "success", bool, k),
                   _field(o, "in_hand", bool, k), float(stamp), str(o.get("message", ""))[:500])
