"""`sim_robot`: the mini-CHORES simulator (flare_training.envs) as a ROS 2 robot, for the policy node.

    sim_robot --ros-args -p task:=objectnav -p seeds:=[1500000000,1500000001]
    policy_node --ros-args -p bundle:=models/sim_tiny_bc

It speaks the same protocol as the real executors (flare_policy.protocol) and publishes its camera like a
real camera, so the policy node needs no simulator-specific code:

* camera: sensor_msgs/Image `rgb8` on `camera_topic` (default `/camera/color/image_raw`, the policy node's
  default navigation topic, so the two run together without remapping), best effort, at `camera_rate_hz`
  (default 10 Hz) with the publish time as header stamp, plus one frame right after every executed command
  (`publish_after_step`). The pixels are the env's 56x56 egocentric view, exactly what training saw.
* commands: std_msgs/String JSON on `command_topic`. Each command is executed with `env.step` and answered on
  `result_topic` (CommandResult: success, `in_hand` from the observation, `stamp` taken after the step and
  after the new frame is in place, so every frame stamped later shows the new state). Malformed commands are
  logged and ignored; actions outside the sim action set (or masked for `sim_locobot`) are refused with
  success=false; `stop` halts (nothing is moving between commands; the sim holds) and is never answered;
  commands after the episode has finished are refused until a reset.
* readiness: std_msgs/Bool on `ready_topic` (transient local), true once an episode is loaded; false while
  `runstop_topic` (std_msgs/Bool, true = runstop pressed) says so and at shutdown.
* episodes: `seeds` (cycled) of `task`. The current episode is announced on `episode_topic`
  (std_msgs/String JSON {episode, task, seed, goal, max_steps, expert_length}, transient local), so a
  demo or user can hand its goal to the policy (`publish_goal:=true` does it on `goal_topic` itself).
  `reset_topic` (std_msgs/String): "" or "next" loads the next seed; '{"seed": 7, "task": "pickup"}' a given
  one. When an episode ends (`end`, or truncation at the task's max_steps) the outcome is published on
  `outcome_topic` (JSON {episode, task, seed, goal, success, sel, steps, expert_length, reason, reward}).
  `auto_reset:=true` loads the next seed right after an outcome. After any reset, commands of the policy
  episode that was driving the previous sim episode (their `episode` field) are refused until the policy
  starts a new episode, so a late command of an old episode never moves the new one.

No torch here: only the gymnasium env, numpy and rclpy.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
import time

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterException
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, String

from flare_policy.embodiments import SIM_ACTIONS
from flare_policy.protocol import (COMMAND_TOPIC, GOAL_TOPIC, OUTCOME_TOPIC, READY_TOPIC, RESULT_TOPIC, START_POSE,
                                   STOP, Command, CommandResult, ProtocolError)
from flare_policy.rosutil import shutdown_executor

NODE_NAME = "sim_robot"
CAMERA_TOPIC = "/camera/color/image_raw"
EPISODE_TOPIC = "/sim/episode"
RESET_TOPIC = "/sim/reset"
RUNSTOP_TOPIC = "/sim/runstop"


class ConfigError(Exception):
    pass


class SimEpisode:
    """The env side, ROS-free: one episode at a time, commands by action name."""

    def __init__(self, task: str, embodiment: str = "sim", with_expert_length: bool = True):
        from flare_training.envs import make_env

        self.task, self.embodiment = task, embodiment
        try:
            self.env = make_env(task, embodiment=embodiment)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.with_expert_length = with_expert_length
        self.allowed = self.env.embodiment.allowed or frozenset(SIM_ACTIONS)
        self.count = 0
        self.seed = None
        self.obs = None
        self.done = True
        self.steps = 0
        self.reward = 0.0
        self.expert_length = -1
        self.frames: list[np.ndarray] = []

    def reset(self, seed: int) -> dict:
        self.obs, _ = self.env.reset(seed=int(seed))
        self.seed, self.done, self.steps, self.reward = int(seed), False, 0, 0.0
        self.count += 1
        self.expert_length = -1
        if self.with_expert_length:
            from flare_training.expert import expert_length
            self.expert_length = int(expert_length(self.task, int(seed), embodiment=self.embodiment))
        return self.info()

    def info(self) -> dict:
        return {"episode": self.count, "task": self.task, "seed": self.seed, "goal": self.obs["goal"],
                "max_steps": int(self.env.max_steps), "expert_length": self.expert_length,
                "embodiment": self.embodiment}

    @property
    def rgb(self) -> np.ndarray:
        return self.obs["rgb"]

    @property
    def in_hand(self) -> bool:
        return bool(self.obs["in_hand"])

    def execute(self, action: str) -> tuple[bool, str, dict | None]:
        """-> (success, message, outcome or None)."""
        if self.done:
            return False, "episode over; waiting for a reset", None
        if action not in SIM_ACTIONS:
            return False, f"unknown action {action!r} (sim actions: {', '.join(SIM_ACTIONS)})", None
        if action not in self.allowed:
            return False, f"action {action!r} is masked on embodiment {self.embodiment!r}", None
        obs, reward, terminated, truncated, info = self.env.step(SIM_ACTIONS.index(action))
        self.obs, self.steps, self.reward = obs, self.steps + 1, self.reward + float(reward)
        outcome = None
        if terminated or truncated:
            from flare_training.envs import sel

            self.done = True
            success = bool(info.get("success", False))
            outcome = dict(self.info(), success=success, steps=self.steps,
                           sel=sel(success, self.steps, self.expert_length),
                           reason="end" if terminated else "truncated", reward=self.reward)
            for k in ("rooms_total", "rooms_marked", "pct_rooms"):
                if k in info:
                    outcome[k] = info[k]
        return True, "", outcome


SENSOR = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=1)
RELIABLE = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=100)  # as policy_node
LATCHED = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
LATCHED10 = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=10,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)

PARAMS = {
    "task": ("objectnav", "mini-CHORES task: objectnav | pickup | fetch | roomvisit (or a held-out family)"),
    "embodiment": ("sim", "sim (all 8 actions) or sim_locobot (navigation only)"),
    "seeds": ([0], "Episode seeds, cycled (reset_topic 'next' advances)"),
    "seed": (-1, "Shortcut for a single seed; overrides `seeds` when >= 0"),
    "camera_topic": (CAMERA_TOPIC, "sensor_msgs/Image rgb8 output (best effort)"),
    "camera_frame_id": ("sim_camera", "header.frame_id of the frames"),
    "camera_rate_hz": (10.0, "Camera publish rate; 0 = only after executed commands"),
    "publish_after_step": (True, "Also publish a frame right after every executed command"),
    "step_delay_s": (0.0, "Simulated motion time before a command's result (frames keep flowing)"),
    "command_topic": (COMMAND_TOPIC, "Policy commands (std_msgs/String JSON)"),
    "result_topic": (RESULT_TOPIC, "Command results (std_msgs/String JSON)"),
    "ready_topic": (READY_TOPIC, "Readiness (std_msgs/Bool, transient local)"),
    "runstop_topic": (RUNSTOP_TOPIC, "std_msgs/Bool: true = simulated runstop pressed"),
    "outcome_topic": (OUTCOME_TOPIC, "Episode outcomes (std_msgs/String JSON, transient local depth 10)"),
    "episode_topic": (EPISODE_TOPIC, "Current episode incl. its goal (std_msgs/String JSON, transient local)"),
    "reset_topic": (RESET_TOPIC, "std_msgs/String: '' / 'next' or JSON {\"seed\": s, \"task\": t}"),
    "goal_topic": (GOAL_TOPIC, "Where publish_goal sends the episode goal"),
    "publish_goal": (False, "Publish each episode's goal on goal_topic (once a subscriber is there)"),
    "auto_reset": (False, "Load the next seed right after an episode outcome"),
    "expert_length": (True, "Run the expert at each reset to get SEL's reference length"),
}


class SimRobotNode(Node):
    """SimEpisode behind the executor protocol: camera frames, command results, readiness, episodes."""

    def __init__(self):
        super().__init__(NODE_NAME)
        p = {}
        for name, (default, desc) in PARAMS.items():
            try:
                p[name] = self.declare_parameter(name, default, ParameterDescriptor(
                    description=desc, read_only=True)).value
            except (ParameterException, TypeError, ValueError) as e:
                raise ConfigError(f"parameter {name!r}: {e}") from None
            if isinstance(default, float) and isinstance(p[name], int) and not isinstance(p[name], bool):
                p[name] = float(p[name])
        self.p = p
        seeds = [p["seed"]] if p["seed"] >= 0 else list(p["seeds"])
        if not seeds or any(s < 0 for s in seeds):
            raise ConfigError(f"seeds must be non-negative integers, got {seeds}")
        if p["camera_rate_hz"] < 0 or p["step_delay_s"] < 0:
            raise ConfigError("camera_rate_hz and step_delay_s must be >= 0")
        self.seeds, self.seed_idx = seeds, 0
        self.sim = SimEpisode(p["task"], p["embodiment"], with_expert_length=p["expert_length"])
        self.lock = threading.Lock()  # env state + frame/stamp ordering
        self.runstop = False
        self.last_stamp = 0.0
        self.closing = False
        self.last_policy_episode = 0  # `episode` field of the last executed command
        self.stale_policy_episode = 0  # commands of this policy episode predate the current sim episode
        self.goal_pending = False
        self._String, self._Bool, self._Image = String, Bool, Image

        self.cmd_group = MutuallyExclusiveCallbackGroup()
        self.cam_group = MutuallyExclusiveCallbackGroup()
        self.image_pub = self.create_publisher(Image, p["camera_topic"], SENSOR)
        self.result_pub = self.create_publisher(String, p["result_topic"], RELIABLE)
        self.ready_pub = self.create_publisher(Bool, p["ready_topic"], LATCHED)
        self.outcome_pub = self.create_publisher(String, p["outcome_topic"], LATCHED10)
        self.episode_pub = self.create_publisher(String, p["episode_topic"], LATCHED)
        self.goal_pub = self.create_publisher(String, p["goal_topic"], QoSProfile(
            reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1))
        self.create_subscription(String, p["command_topic"], self._on_command, RELIABLE,
                                 callback_group=self.cmd_group)
        self.create_subscription(String, p["reset_topic"], self._on_reset, RELIABLE,
                                 callback_group=self.cmd_group)
        self.create_subscription(Bool, p["runstop_topic"], self._on_runstop, RELIABLE,
                                 callback_group=self.cmd_group)
        if p["camera_rate_hz"] > 0:
            self.create_timer(1.0 / p["camera_rate_hz"], self.publish_frame, callback_group=self.cam_group)
        self.create_timer(0.1, self._maybe_publish_goal, callback_group=self.cmd_group)
        self._reset(self.seeds[0])
        self.get_logger().info(f"sim robot: task {p['task']} ({p['embodiment']}), seeds {self.seeds}, "
                               f"camera {p['camera_topic']} at {p['camera_rate_hz']} Hz")

    # -------------------------------------------------------------- outputs
    def _stamp(self) -> float:
        t = max(time.time(), self.last_stamp + 1e-6)
        self.last_stamp = t
        return t

    def publish_frame(self) -> None:
        with self.lock:  # read the frame and take its stamp atomically w.r.t. command execution
            if self.sim.obs is None or self.closing:
                return
            rgb = self.sim.rgb
            t = self._stamp()
        msg = self._Image()
        msg.header.stamp.sec = int(t)
        msg.header.stamp.nanosec = min(int((t - int(t)) * 1e9), 999_999_999)
        msg.header.frame_id = self.p["camera_frame_id"]
        msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
        msg.encoding, msg.is_bigendian, msg.step = "rgb8", 0, int(rgb.shape[1]) * 3
        msg.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
        self.image_pub.publish(msg)

    def publish_ready(self) -> None:
        ready = (not self.runstop) and (not self.closing) and self.sim.obs is not None
        self.ready_pub.publish(self._Bool(data=ready))

    def _publish_json(self, pub, obj) -> None:
        pub.publish(self._String(data=json.dumps(obj)))

    # -------------------------------------------------------------- episodes
    def _reset(self, seed: int, task: str | None = None) -> None:
        with self.lock:
            if task and task != self.sim.task:
                self.sim = SimEpisode(task, self.p["embodiment"], with_expert_length=self.p["expert_length"])
            info = self.sim.reset(seed)
            # a policy episode that was running before this reset must not drive the new sim episode
            self.stale_policy_episode = self.last_policy_episode
        self._publish_json(self.episode_pub, info)
        self.get_logger().info(f"episode {info['episode']}: {info['task']} seed {seed}: {info['goal']!r} "
                               f"(expert {info['expert_length']} steps)")
        self.goal_pending = self.p["publish_goal"]
        self.publish_ready()
        self.publish_frame()

    def _next_seed(self) -> int:
        self.seed_idx = (self.seed_idx + 1) % len(self.seeds)
        return self.seeds[self.seed_idx]

    def _on_reset(self, msg) -> None:
        text = msg.data.strip()
        seed, task = None, None
        if text and text != "next":
            try:
                obj = json.loads(text)
                if not isinstance(obj, dict):
                    raise ValueError("not an object")
                seed = obj.get("seed")
                task = obj.get("task")
                if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
                    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
                if task is not None and not isinstance(task, str):
                    raise ValueError("task must be a string")
            except (json.JSONDecodeError, ValueError) as e:
                self.get_logger().warning(f"ignoring malformed reset request {text[:80]!r}: {e}")
                return
        try:
            self._reset(self._next_seed() if seed is None else seed, task)
        except ConfigError as e:
            self.get_logger().error(f"reset refused: {e}")

    def _maybe_publish_goal(self) -> None:
        if self.goal_pending and self.goal_pub.get_subscription_count() > 0:
            self.goal_pending = False
            self.goal_pub.publish(self._String(data=self.sim.obs["goal"]))

    # -------------------------------------------------------------- commands
    def _on_runstop(self, msg) -> None:
        if bool(msg.data) != self.runstop:
            self.runstop = bool(msg.data)
            self.get_logger().warning("runstop pressed" if self.runstop else "runstop released")
            self.publish_ready()

    def _on_command(self, msg) -> None:
        try:
            cmd = Command.from_json(msg.data)
        except ProtocolError as e:
            self.get_logger().warning(f"ignoring malformed command: {e}", throttle_duration_sec=1.0)
            return
        if cmd.action == STOP:
            self.get_logger().info(f"stop (command {cmd.id}): holding")
            return
        if self.closing:
            return
        if self.runstop:
            self._reply(cmd, False, "runstop pressed")
            return
        if cmd.action == START_POSE:  # the simulated agent already starts each episode in its pose
            self._reply(cmd, True, "start_pose: the simulated agent is in its reset pose")
            if self.p["publish_after_step"]:
                self.publish_frame()
            return
        if cmd.episode > 0 and cmd.episode == self.stale_policy_episode:
            self._reply(cmd, False, "command from a policy episode that started before this sim episode; "
                                    "send this episode's goal")
            return
        if self.p["step_delay_s"] > 0 and cmd.action in SIM_ACTIONS and not self.sim.done:
            time.sleep(self.p["step_delay_s"])  # "motion": frames stamped meanwhile show the old state
        with self.lock:
            ok, message, outcome = self.sim.execute(cmd.action)
            if ok:
                self.last_policy_episode = cmd.episode
            in_hand = self.sim.in_hand
            stamp = self._stamp()
        self.result_pub.publish(self._String(data=CommandResult(cmd.id, cmd.action, ok, in_hand, stamp,
                                                                message).to_json()))
        if not ok:
            self.get_logger().info(f"refused command {cmd.id} ({cmd.action}): {message}")
        if self.p["publish_after_step"] and ok:
            self.publish_frame()
        if outcome is not None:
            self._publish_json(self.outcome_pub, outcome)
            self.get_logger().info(
                f"episode {outcome['episode']} over ({outcome['reason']}): success={outcome['success']} "
                f"steps={outcome['steps']} SEL={outcome['sel']}")
            if self.p["auto_reset"]:
                self._reset(self._next_seed())

    def _reply(self, cmd, ok, message) -> None:
        with self.lock:
            stamp, in_hand = self._stamp(), self.sim.in_hand
        self.result_pub.publish(self._String(data=CommandResult(cmd.id, cmd.action, ok, in_hand, stamp,
                                                                message).to_json()))

    def shutdown(self) -> None:
        from rclpy.duration import Duration

        self.closing = True
        self.publish_ready()
        try:
            self.ready_pub.wait_for_all_acked(Duration(seconds=0.5))
        except Exception:  # noqa: BLE001
            pass



def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        try:
            node = SimRobotNode()
        except ConfigError as e:
            print(f"{NODE_NAME}: error: {e}", file=sys.stderr, flush=True)
            return 2
        ex = MultiThreadedExecutor(num_threads=2)
        ex.add_node(node)
        while not stop.is_set() and rclpy.ok():
            ex.spin_once(timeout_sec=0.1)
        node.shutdown()
        shutdown_executor(ex)
        return 0
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
