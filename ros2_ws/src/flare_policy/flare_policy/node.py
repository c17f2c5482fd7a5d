"""`policy_node`: a FLaRe/SPOC policy bundle driving a robot executor over ROS 2, closed loop and discrete.

    ros2 run flare_policy policy_node --ros-args -p bundle:=/models/stretch_flare -p embodiment:=stretch \
        -p navigation_camera_rotation:=270
    ros2 topic pub --once /flare/goal std_msgs/msg/String "{data: 'find a mug'}"

One step of an episode (SPOC/FLaRe are discrete, so is this node):

    0. (once per episode, with `start_pose`) send `start_pose` and wait for its result: the executor puts the
       robot in the pose the policy was trained from (head aimed, arm retracted, gripper open),
    1. wait for the robot to be ready (`ready_topic`, transient local; runstop pauses everything),
    2. wait for a frame of every camera the bundle expects, stamped *after* the previous command's result
       (or after the goal for the first step) and not older than `max_frame_age_s`,
    3. infer (flare_policy.runner.PolicyRunner: KV-cache kept across the steps of the episode),
    4. publish exactly one Command on `command_topic` and wait for the CommandResult with the same id
       (its `in_hand` feeds the next inference), then back to 1.

The episode finishes when the policy says `end` (sent to the executor too, which never moves for it, so a
simulator can judge it), at `max_steps` (a `stop` is sent), when a command is not acknowledged within
`command_timeout_s` (`stop`, outcome "timeout"), when no fresh frame arrives within `frame_timeout_s`
(`stop`, outcome "camera_timeout"), when a new goal preempts it (`stop`, outcome "preempted"), on the
`~/cancel` service, or on shutdown (SIGINT/SIGTERM: `stop`, then a clean exit). The KV-cache is reset
whenever an episode finishes or starts.

A camera that has published nothing for `camera_silent_s` (from node start, goal or not) is reported by topic:
an ERROR log line once, an ERROR /diagnostics status and `silent_cameras` in `/flare/status`, each with a hint
(the Image topics that do exist, e.g. realsense-ros >= 4.55's `.../camera/camera/color/image_raw`).

Threading: camera callbacks live in their own callback group and only validate + store the latest frame
(with its header stamp); goals, results, readiness, timeouts and inference share one mutually exclusive
"policy" group, woken by a guard condition; a MultiThreadedExecutor spins both, so frames are never blocked
by inference. Outputs: commands, a JSON status on `status_topic` after every step and state change (and at
1 Hz as a heartbeat), and `/diagnostics` (camera rates, frame ages, invalid frames, inference latency).

Layering: this module is the only one of flare_policy that imports rclpy; the policy itself is
flare_policy.runner (ROS-free), the message format flare_policy.protocol.
"""
from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .preprocess import FrameError, image_to_array
from .protocol import (COMMAND_TOPIC, GOAL_TOPIC, READY_TOPIC, RESULT_TOPIC, START_POSE, STATUS_TOPIC, STOP,
                       Command, CommandResult, ProtocolError)
from .rosutil import shutdown_executor

NODE_NAME = "policy_node"
MIN_SIDE = 8  # frames with a side below this many pixels are rejected as implausible
EMBODIMENT_CHOICES = ("stretch", "locobot", "sim", "sim_locobot")
CAMERA_DEFAULT_TOPICS = {
    "navigation": "/camera/color/image_raw",  # Stretch head D435i (realsense-ros <= 4.54 naming)
    "manipulation": "/gripper_camera/color/image_rect_raw",  # Stretch D405: no RGB module -> image_rect_raw
}
OUTCOMES = ("ended", "max_steps", "timeout", "camera_timeout", "start_pose_failed", "preempted", "cancelled",
            "shutdown", "error")
ACTION_SELECTIONS = ("bundle", "greedy", "sample")
DEFAULT_KV_WINDOW = 1000  # bundles that do not name their training context


class ConfigError(Exception):
    """Bad parameters or bundle: reported as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------------------
# message -> array validation (pure: used by the node's camera callbacks and fuzzed in-process by the tests)

def stamp_to_float(stamp) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def frame_from_msg(msg) -> tuple[np.ndarray, float]:
    """sensor_msgs/Image -> ((H, W, 3) uint8 RGB, header stamp in seconds); FrameError if unusable.

    Rejected: encodings other than rgb8/bgr8 (so float images and their NaNs never get in), zero or
    implausible sizes, a row step below width*3, data not exactly step*height bytes (truncated or padded),
    and unstamped frames (a zero stamp cannot be checked for freshness)."""
    stamp = msg.header.stamp
    if stamp.sec < 0 or (stamp.sec == 0 and stamp.nanosec == 0):
        raise FrameError(f"frame has no valid header stamp ({stamp.sec}.{stamp.nanosec:09d}); its age cannot be "
                         f"checked")
    if not 0 <= stamp.nanosec < 1_000_000_000:
        raise FrameError(f"frame stamp has nanosec {stamp.nanosec} out of range")
    img = image_to_array(msg.encoding, msg.height, msg.width, msg.step, msg.data)
    if min(img.shape[:2]) < MIN_SIDE:
        raise FrameError(f"implausibly small frame {img.shape[1]}x{img.shape[0]} (min side {MIN_SIDE})")
    return img, stamp_to_float(stamp)


def camera_key(camera_name: str) -> str:
    """Bundle camera name -> parameter prefix: raw_navigation_camera -> navigation."""
    key = camera_name
    if key.startswith("raw_"):
        key = key[4:]
    if key.endswith("_camera"):
        key = key[: -len("_camera")]
    return key


# ---------------------------------------------------------------------------------------------------------

@dataclass
class Frame:
    image: np.ndarray
    stamp: float  # header stamp, seconds
    received: float  # perf_counter at callback


@dataclass
class CameraStats:
    topic: str
    received: int = 0
    invalid: int = 0
    last_error: str = ""
    times: deque = field(default_factory=lambda: deque(maxlen=300))  # monotonic receive times
    silent_hint: str = ""  # set while the topic has been silent for camera_silent_s

    def rate(self, now: float, window: float = 3.0) -> float:
        ts = [t for t in self.times if now - t <= window]
        if len(ts) < 2:
            return 0.0
        return (len(ts) - 1) / max(ts[-1] - ts[0], 1e-6)


@dataclass
class Episode:
    id: int
    goal: str
    started_wall: float
    state: str = "waiting_frames"  # start_pose | waiting_frames | waiting_result | finished
    step: int = 0  # commands sent
    need_after: float = 0.0  # frames must be stamped after this (seconds)
    wait_since: float = 0.0  # active clock when the wait for frames started
    pending: Command | None = None
    pending_since: float = 0.0  # active clock
    trigger: float = 0.0  # perf_counter when the result arrived
    last_action: str | None = None
    last_result: dict | None = None
    outcome: str | None = None
    reason: str = ""


class ActiveClock:
    """Monotonic seconds that do not advance while paused (robot not ready): the episode clock."""

    def __init__(self):
        self._paused_total = 0.0
        self._pause_start: float | None = None

    def now(self) -> float:
        t = time.monotonic()
        paused = self._paused_total + ((t - self._pause_start) if self._pause_start is not None else 0.0)
        return t - paused

    def pause(self):
        if self._pause_start is None:
            self._pause_start = time.monotonic()

    def resume(self):
        if self._pause_start is not None:
            self._paused_total += time.monotonic() - self._pause_start
            self._pause_start = None


class _Params:
    """Declared parameters (name -> (default, description, extra descriptor fields))."""

    SPEC = {
        "bundle": ("", "Policy bundle directory (policy.json + model.safetensors). Required."),
        "embodiment": ("", "Robot embodiment: stretch | locobot | sim | sim_locobot; must match the bundle's. "
                           "Empty = take the bundle's."),
        "navigation_camera_topic": (CAMERA_DEFAULT_TOPICS["navigation"],
                                    "sensor_msgs/Image topic of the navigation camera (Stretch head D435i: "
                                    "/camera/color/image_raw; LoCoBot: /locobot/camera/color/image_raw; "
                                    "realsense-ros >= 4.55 without camera_namespace: /camera/camera/color/image_raw)."),
        "manipulation_camera_topic": (CAMERA_DEFAULT_TOPICS["manipulation"],
                                      "sensor_msgs/Image topic of the manipulation camera (Stretch gripper D405: "
                                      "/gripper_camera/color/image_rect_raw). Only used if the bundle has one."),
        "navigation_camera_rotation": (0, "Counter-clockwise rotation (0/90/180/270 degrees) applied to navigation "
                                          "frames before preprocessing. The Stretch head camera is mounted sideways: "
                                          "use 270 there (stretch_ai's 3 quarter turns) so frames are upright."),
        "manipulation_camera_rotation": (0, "Counter-clockwise rotation (0/90/180/270) of manipulation frames."),
        "goal_topic": (GOAL_TOPIC, "std_msgs/String: a natural-language goal starts (or preempts) an episode."),
        "goal_durability": ("volatile", "QoS durability of the goal subscription: volatile (matches every "
                                        "publisher, e.g. `ros2 topic pub --once`) or transient_local (also gets a "
                                        "latched goal published before this node started; matches only "
                                        "transient_local publishers). Reliable, depth 1 either way."),
        "command_topic": (COMMAND_TOPIC, "std_msgs/String JSON commands to the executor (flare_policy.protocol)."),
        "result_topic": (RESULT_TOPIC, "std_msgs/String JSON command results from the executor."),
        "ready_topic": (READY_TOPIC, "std_msgs/Bool robot readiness (transient local); false pauses the episode."),
        "status_topic": (STATUS_TOPIC, "std_msgs/String JSON episode status, after every step and state change."),
        "require_ready": (True, "Send no command before the executor has reported ready=true on ready_topic."),
        "max_frame_age_s": (0.5, "A frame older than this (node clock minus header stamp) is never acted on. "
                                 "Camera and policy clocks must be synchronised (chrony) across machines."),
        "frame_timeout_s": (5.0, "Episode stops (outcome camera_timeout, `stop` sent) if no fresh frame of every "
                                 "camera arrives within this many seconds of robot time."),
        "command_timeout_s": (30.0, "Episode stops (outcome timeout, `stop` sent) if a command is not "
                                    "acknowledged within this many seconds of robot time."),
        "max_steps": (600, "Commands per episode; at the limit a `stop` is sent (outcome max_steps)."),
        "action_selection": ("bundle", "bundle | greedy | sample. bundle = what policy.json's inference."
                                       "action_selection says: sample (seeded by `seed`) for bundles converted from "
                                       "FLaRe checkpoints, which FLaRe evaluates by sampling; greedy (arg-max) for "
                                       "the others. The executed action is fed back as the previous action."),
        "kv_window": (0, "Decoder context in steps: a rolling KV-cache of the last kv_window steps of the "
                         "episode. 0 = the bundle's inference.kv_window (128 for FLaRe conversions: FLaRe trained "
                         f"on at most 128 steps of context), else {DEFAULT_KV_WINDOW}. Not FLaRe's evaluation "
                         "cache, which is a 500-slot buffer on a global call counter, wiped every 500 calls "
                         "whatever the episode step."),
        "start_pose": (False, "Before an episode's first step, send `start_pose` and wait for its result (the "
                              "executor puts the robot in the pose the policy was trained from). On in the robot "
                              "configs."),
        "camera_silent_s": (10.0, "A camera topic with nothing received for this long is reported as silent "
                                  "(ERROR log, /diagnostics ERROR, silent_cameras in status), with a hint."),
        "allow_encoder_mismatch": (False, "Load a T5 / DINOv2 directory whose weights differ from the ones the "
                                          "bundle records (weights_sha256): the policy then sees features it "
                                          "was never trained on. Off = refuse to start."),
        "device": ("cpu", "torch device for the policy (cpu, cuda, cuda:0)."),
        "threads": (0, "torch intra-op threads (0 = torch's default)."),
        "seed": (0, "Seed for sampled actions."),
        "text_encoder_path": ("", "Local directory overriding the bundle's text encoder path (needed for t5)."),
        "vision_encoder_path": ("", "Local DINOv2 directory overriding the bundle's vision_encoder.path."),
        "vision_quantize": (False, "Dynamic int8 quantization of the DINOv2 linears (CPU speed-up; not "
                                   "bit-identical to FLaRe's fp32 features)."),
        "diagnostics_period_s": (1.0, "Period of /diagnostics and of the status heartbeat."),
        "log_steps": (True, "Log every step (action, top probabilities, latency) at info level."),
    }
    RANGES = {
        "navigation_camera_rotation": ("int", 0, 270, 90),
        "manipulation_camera_rotation": ("int", 0, 270, 90),
        "max_frame_age_s": ("float", 0.001, 3600.0),
        "frame_timeout_s": ("float", 0.01, 3600.0),
        "command_timeout_s": ("float", 0.01, 3600.0),
        "max_steps": ("int", 1, 1_000_000, 1),
        "kv_window": ("int", 0, 100_000, 1),
        "camera_silent_s": ("float", 0.1, 3600.0),
        "threads": ("int", 0, 256, 1),
        "seed": ("int", 0, 2**31 - 1, 1),
        "diagnostics_period_s": ("float", 0.05, 60.0),
    }


def inference_settings(meta: dict, action_selection: str, kv_window: int) -> tuple[str, int]:
    """(greedy | sample, kv_window) from the parameters, falling back to policy.json's `inference` block."""
    inf = meta.get("inference") or {}
    if action_selection == "bundle":
        action_selection = inf.get("action_selection", "greedy")
        if action_selection not in ("greedy", "sample"):
            raise ConfigError(f"bundle policy.json: inference.action_selection {action_selection!r} is not "
                              f"greedy or sample")
    if kv_window == 0:
        kv_window = inf.get("kv_window", DEFAULT_KV_WINDOW)
        if not isinstance(kv_window, int) or isinstance(kv_window, bool) or kv_window < 1:
            raise ConfigError(f"bundle policy.json: inference.kv_window {kv_window!r} is not a positive integer")
    return action_selection, kv_window


def check_encoders(bundle, text, vision, *, allow_mismatch: bool = False, warn=None) -> None:
    """Refuse a text / vision encoder directory whose weights are not the ones the bundle records.

    The bundle's `weights_sha256` (written by `flare-policy convert`) is compared with the loaded weights'
    fingerprint; without a recorded fingerprint only the architecture can be checked, and that is said."""
    from .convert import tensor_fingerprint

    checks = []
    if getattr(text, "kind", None) == "t5":
        checks.append(("text encoder (T5)", bundle.text_encoder, text.path,
                       lambda: tensor_fingerprint(text.model.state_dict())))
    if vision is not None:
        checks.append(("vision encoder (DINOv2)", bundle.vision_encoder, vision.path, lambda: vision.weights_sha256))
        if vision.dim != bundle.config.visual_dim:
            raise ConfigError(f"vision encoder {vision.path}: hidden size {vision.dim}, the bundle's policy expects "
                              f"{bundle.config.visual_dim}")
    for what, spec, path, fingerprint in checks:
        expected = spec.get("weights_sha256")
        if not expected:
            if warn:
                warn(f"{what}: the bundle records no weights_sha256, so {path} cannot be checked against the "
                     f"weights the policy was trained with (re-convert with --t5/--dinov2 to record them)")
            continue
        found = fingerprint()
        if found != expected:
            msg = (f"{what} at {path} is not the one the bundle was converted with: weights_sha256 expected "
                   f"{expected[:16]}..., found {found[:16]}...")
            if not allow_mismatch:
                raise ConfigError(msg + " (use the matching directory, or allow_encoder_mismatch:=true to "
                                        "run anyway)")
            if warn:
                warn(msg + "; running anyway (allow_encoder_mismatch)")


def build_node_class():
    """The rclpy node class (built lazily so importing this module does not need rclpy)."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
    from rclpy.duration import Duration
    from rclpy.exceptions import ParameterException
    from rclpy.node import Node
    from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)
    from sensor_msgs.msg import Image
    from std_msgs.msg import Bool, String

    SENSOR_QOS = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=1,
                            durability=DurabilityPolicy.VOLATILE)
    RELIABLE = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=10)
    LATCHED = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

    class PolicyNode(Node):
        def __init__(self, *, runner=None, **kwargs):
            super().__init__(NODE_NAME, **kwargs)
            self.p = self._declare_params()
            self._lock = threading.RLock()  # policy state (episode, runner); held by policy-group callbacks
            self._frame_lock = threading.Lock()
            self.clock_active = ActiveClock()
            self._closing = False
            self._next_id = 1
            self._episode_count = 0
            self.episode: Episode | None = None
            self.last_in_hand = False
            self.latencies = deque(maxlen=200)
            self.overheads = deque(maxlen=200)
            self.steps_total = 0
            self._warm = False
            self._t_start = time.monotonic()

            self.runner = runner if runner is not None else self._load_runner()
            self.bundle = self.runner.bundle
            emb = self.bundle.embodiment.name
            if self.p["embodiment"] and self.p["embodiment"] != emb:
                raise ConfigError(f"embodiment parameter is {self.p['embodiment']!r} but bundle "
                                  f"{self.p['bundle']} is for {emb!r}")
            self.actions = self.bundle.actions

            self.ready = not self.p["require_ready"]
            self.ready_seen = False
            if not self.ready:
                self.clock_active.pause()

            self.policy_group = MutuallyExclusiveCallbackGroup()
            self.camera_group = ReentrantCallbackGroup()
            self.diag_group = MutuallyExclusiveCallbackGroup()

            # cameras: latest frame only
            self.frames: dict[str, Frame] = {}
            self.cam_stats: dict[str, CameraStats] = {}
            self.camera_subs = []
            for spec in self.bundle.cameras:
                topic = self.p[f"{camera_key(spec.name)}_camera_topic"]
                self.cam_stats[spec.name] = CameraStats(topic)
                self.camera_subs.append(self.create_subscription(
                    Image, topic, lambda msg, name=spec.name: self._on_image(name, msg), SENSOR_QOS,
                    callback_group=self.camera_group))

            self.command_pub = self.create_publisher(String, self.p["command_topic"], RELIABLE)
            self.status_pub = self.create_publisher(String, self.p["status_topic"], RELIABLE)
            self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
            goal_qos = LATCHED if self.p["goal_durability"] == "transient_local" else QoSProfile(
                reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1)
            self.create_subscription(String, self.p["goal_topic"], self._on_goal, goal_qos,
                                     callback_group=self.policy_group)
            self.create_subscription(String, self.p["result_topic"], self._on_result, RELIABLE,
                                     callback_group=self.policy_group)
            self.create_subscription(Bool, self.p["ready_topic"], self._on_ready, LATCHED,
                                     callback_group=self.policy_group)
            self._wake = self.create_guard_condition(self._step, callback_group=self.policy_group)
            self.create_timer(0.05, self._step, callback_group=self.policy_group)  # timeouts, pauses
            self.create_timer(self.p["diagnostics_period_s"], self._publish_diagnostics,
                              callback_group=self.diag_group)
            self._cancel_srv = None
            try:
                from std_srvs.srv import Trigger
                self._cancel_srv = self.create_service(Trigger, "~/cancel", self._on_cancel,
                                                       callback_group=self.policy_group)
            except ImportError:  # std_srvs is optional
                pass
            self._DiagnosticArray, self._DiagnosticStatus, self._KeyValue = DiagnosticArray, DiagnosticStatus, KeyValue
            self._String = String
            self.get_logger().info(
                f"policy ready: bundle {self.p['bundle']} ({emb}, {len(self.actions)} actions, cameras "
                + ", ".join(f"{c.name}<-{self.cam_stats[c.name].topic}" for c in self.bundle.cameras)
                + f"); goals on {self.p['goal_topic']}, commands on {self.p['command_topic']}")
            self._publish_status("idle")

        def _inference_mode(self):
            import torch
            return torch.inference_mode()

        # ---------------------------------------------------------------- parameters / loading
        def _declare_params(self) -> dict:
            out = {}
            for name, (default, desc) in _Params.SPEC.items():
                d = ParameterDescriptor(description=desc, read_only=True)
                rng = _Params.RANGES.get(name)
                if rng and rng[0] == "int":
                    d.integer_range = [IntegerRange(from_value=rng[1], to_value=rng[2], step=rng[3])]
                elif rng and rng[0] == "float":
                    d.floating_point_range = [FloatingPointRange(from_value=rng[1], to_value=rng[2], step=0.0)]
                if isinstance(default, float):
                    d.dynamic_typing = True  # accept `-p max_frame_age_s:=1` (an integer) too; checked below
                try:
                    value = self.declare_parameter(name, default, d).value
                except (ParameterException, TypeError, ValueError) as e:
                    raise ConfigError(f"parameter {name!r}: {e}") from None
                if isinstance(default, float):
                    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                        raise ConfigError(f"parameter {name!r} must be a finite number, got {value!r}")
                    value = float(value)
                elif type(value) is not type(default):
                    raise ConfigError(f"parameter {name!r} must be {type(default).__name__}, got {value!r}")
                if rng and not rng[1] <= value <= rng[2]:
                    raise ConfigError(f"parameter {name!r} must be in [{rng[1]}, {rng[2]}], got {value!r}")
                out[name] = value
            if not out["bundle"]:
                raise ConfigError("parameter 'bundle' is required (a policy bundle directory)")
            if out["embodiment"] and out["embodiment"] not in EMBODIMENT_CHOICES:
                raise ConfigError(f"parameter 'embodiment' must be one of {EMBODIMENT_CHOICES}, "
                                  f"got {out['embodiment']!r}")
            if out["action_selection"] not in ACTION_SELECTIONS:
                raise ConfigError(f"parameter 'action_selection' must be one of {ACTION_SELECTIONS}, "
                                  f"got {out['action_selection']!r}")
            if out["goal_durability"] not in ("volatile", "transient_local"):
                raise ConfigError("parameter 'goal_durability' must be volatile or transient_local")
            for name, v in out.items():
                if name.endswith("_rotation") and v % 90:
                    raise ConfigError(f"parameter {name!r} must be a multiple of 90, got {v}")
                if name.endswith("_topic") and (not v or " " in v):
                    raise ConfigError(f"parameter {name!r} is not a valid topic name: {v!r}")
            return out

        def _load_runner(self):
            import torch

            from .bundle import BundleError, load_bundle
            from .runner import PolicyRunner

            if self.p["threads"] > 0:
                torch.set_num_threads(self.p["threads"])
            torch.manual_seed(self.p["seed"])
            dev = self.p["device"]
            if dev.startswith("cuda") and not torch.cuda.is_available():
                raise ConfigError(f"device {dev!r} requested but CUDA is not available")
            try:
                torch.device(dev)
            except (RuntimeError, ValueError) as e:
                raise ConfigError(f"parameter 'device': {e}") from None
            try:
                bundle = load_bundle(self.p["bundle"], device=dev)
            except BundleError as e:
                raise ConfigError(f"bundle: {e}") from None
            if self.p["embodiment"] and self.p["embodiment"] != bundle.embodiment.name:
                raise ConfigError(f"embodiment parameter is {self.p['embodiment']!r} but bundle "
                                  f"{self.p['bundle']} is for {bundle.embodiment.name!r}")
            for spec in bundle.cameras:
                if f"{camera_key(spec.name)}_camera_topic" not in self.p:
                    raise ConfigError(f"bundle camera {spec.name!r} has no topic parameter on this node")
            try:
                from .text import text_encoder_from_spec
                text = text_encoder_from_spec(bundle.text_encoder, device=dev,
                                              override_path=self.p["text_encoder_path"] or None)
            except (OSError, ValueError, KeyError) as e:
                raise ConfigError(f"text encoder {bundle.text_encoder!r}: {e}") from None
            vision = None
            if bundle.config.vision == "dinov2":
                from .vision import VisionError, vision_provider_from_spec
                try:
                    vision = vision_provider_from_spec(bundle.vision_encoder, device=dev,
                                                       override_path=self.p["vision_encoder_path"] or None,
                                                       quantize=self.p["vision_quantize"])
                except (VisionError, OSError) as e:
                    raise ConfigError(f"vision encoder: {e}") from None
            check_encoders(bundle, text, vision, allow_mismatch=self.p["allow_encoder_mismatch"],
                           warn=self.get_logger().warning)
            rotation = {c.name: self.p[f"{camera_key(c.name)}_camera_rotation"] for c in bundle.cameras}
            selection, kv_window = inference_settings(bundle.meta, self.p["action_selection"], self.p["kv_window"])
            self.get_logger().info(f"actions {selection} (seed {self.p['seed']}), context {kv_window} steps")
            return PolicyRunner(bundle, device=dev, kv_window=kv_window, greedy=selection == "greedy",
                                seed=self.p["seed"], text_encoder=text, vision=vision, camera_rotation=rotation)

        # ---------------------------------------------------------------- camera callbacks (camera group)
        def _on_image(self, name: str, msg) -> None:
            t = time.perf_counter()
            stats = self.cam_stats[name]
            try:
                img, stamp = frame_from_msg(msg)
            except FrameError as e:
                stats.invalid += 1
                stats.last_error = str(e)
                self.get_logger().warning(f"camera {name} ({stats.topic}): rejected frame: {e} "
                                       f"[{stats.invalid} rejected so far]", throttle_duration_sec=2.0)
                return
            with self._frame_lock:
                self.frames[name] = Frame(img, stamp, t)
                stats.received += 1
                stats.times.append(time.monotonic())
            ep = self.episode
            if ep is not None and ep.state == "waiting_frames":
                self._wake.trigger()

        # ---------------------------------------------------------------- policy group
        def _on_ready(self, msg) -> None:
            with self._lock:
                was = self.ready
                self.ready, self.ready_seen = bool(msg.data), True
                if self.ready and not was:
                    self.clock_active.resume()
                    self.get_logger().info("robot ready")
                elif not self.ready and was:
                    self.clock_active.pause()
                    self.get_logger().warning("robot not ready (runstop?): episode paused, no commands")
                if was != self.ready and self.episode is not None:
                    self._publish_status()
            self._step()

        def _on_goal(self, msg) -> None:
            from .runner import GoalError, validate_goal

            with self._lock:
                if self._closing:
                    return
                try:
                    goal = validate_goal(msg.data)
                except GoalError as e:
                    shown = msg.data[:60] + ("..." if len(msg.data) > 60 else "")
                    self.get_logger().error(f"goal rejected: {e} (got {shown!r}); the running episode, if any, "
                                            f"continues")
                    self._publish_status(extra={"rejected_goal": str(e)})
                    return
                if self.episode is not None and self.episode.state != "finished":
                    self._finish("preempted", send_stop=True, reason=f"new goal {goal!r}")
                try:
                    with self._inference_mode():
                        self.runner.start_episode(goal)
                except Exception as e:  # noqa: BLE001 - the text encoder failing must not kill the node
                    self.get_logger().error(f"cannot start episode for goal {goal!r}: {e}")
                    return
                self._episode_count += 1
                now = time.time()
                self.episode = Episode(self._episode_count, goal, now, need_after=now,
                                       wait_since=self.clock_active.now(),
                                       state="start_pose" if self.p["start_pose"] else "waiting_frames")
                self.get_logger().info(f"episode {self._episode_count}: goal {goal!r}")
                self._publish_status()
            self._step()

        def _on_result(self, msg) -> None:
            t = time.perf_counter()
            try:
                res = CommandResult.from_json(msg.data)
            except ProtocolError as e:
                self.get_logger().warning(f"ignoring malformed command result: {e}", throttle_duration_sec=2.0)
                return
            with self._lock:
                ep = self.episode
                if ep is None or ep.pending is None or res.id != ep.pending.id:
                    self.get_logger().debug(f"ignoring result for command {res.id} (not outstanding)")
                    return
                if res.action != ep.pending.action:
                    self.get_logger().warning(f"result for command {res.id} names action {res.action!r}, "
                                           f"sent {ep.pending.action!r}; ignored")
                    return
                self.last_in_hand = res.in_hand
                ep.last_result = {"id": res.id, "action": res.action, "success": res.success,
                                  "in_hand": res.in_hand, "message": res.message}
                if not res.success:
                    self.get_logger().info(f"executor: {res.action} (command {res.id}) did not succeed: "
                                           f"{res.message}")
                done = ep.pending.action
                ep.pending = None
                ep.need_after = res.stamp
                ep.wait_since = self.clock_active.now()
                ep.trigger = t
                ep.state = "waiting_frames"
                if done == START_POSE and not res.success:
                    self._finish("start_pose_failed", send_stop=True, reason=f"start_pose: {res.message}")
                elif done == "end":
                    self._finish("ended", send_stop=False, reason="policy chose end")
                elif ep.step >= self.p["max_steps"]:
                    self._finish("max_steps", send_stop=True, reason=f"{ep.step} steps")
            self._step()

        def _on_cancel(self, request, response):
            with self._lock:
                if self.episode is not None and self.episode.state != "finished":
                    self._finish("cancelled", send_stop=True, reason="~/cancel service")
                    response.success, response.message = True, "episode cancelled"
                else:
                    self._publish_command(STOP)
                    response.success, response.message = False, "no running episode (stop sent anyway)"
            return response

        def _step(self) -> None:
            """Advance the episode if it can: timeouts, freshness, inference, one command."""
            with self._lock:
                ep = self.episode
                if ep is None or ep.state == "finished" or self._closing:
                    return
                if not self.ready:
                    return  # paused: the active clock is stopped too
                now_active = self.clock_active.now()
                if ep.state == "start_pose":
                    cmd = self._publish_command(START_POSE)
                    ep.pending, ep.pending_since, ep.state = cmd, now_active, "waiting_result"
                    self._publish_status(extra={"command_id": cmd.id})
                    return
                if ep.state == "waiting_result":
                    if now_active - ep.pending_since > self.p["command_timeout_s"]:
                        self._finish("timeout", send_stop=True,
                                     reason=f"command {ep.pending.id} ({ep.pending.action}) not acknowledged "
                                            f"within {self.p['command_timeout_s']} s")
                    return
                frames, why = self._fresh_frames(ep)
                if frames is None:
                    if now_active - ep.wait_since > self.p["frame_timeout_s"]:
                        self._finish("camera_timeout", send_stop=True,
                                     reason=f"no fresh frame within {self.p['frame_timeout_s']} s ({why})")
                    return
                trigger = max([ep.trigger] + [f.received for f in frames.values()])
                try:
                    decision = self.runner.act({k: f.image for k, f in frames.items()}, self.last_in_hand)
                except FrameError as e:
                    # a frame preprocessing refuses: drop it and keep waiting for another
                    with self._frame_lock:
                        for k in frames:
                            if self.frames.get(k) is frames[k]:
                                del self.frames[k]
                            self.cam_stats[k].invalid += 1
                            self.cam_stats[k].last_error = str(e)
                    self.get_logger().warning(f"frame rejected by preprocessing: {e}", throttle_duration_sec=2.0)
                    return
                except Exception as e:  # noqa: BLE001
                    self.get_logger().error(f"inference failed: {e!r}")
                    self._finish("error", send_stop=True, reason=f"inference failed: {e}")
                    return
                if self._closing:  # shutdown gave up waiting for this inference and already sent `stop`
                    return
                ep_need_after = ep.need_after
                cmd = self._publish_command(decision.action)
                t_pub = time.perf_counter()
                ep.pending, ep.pending_since, ep.state = cmd, self.clock_active.now(), "waiting_result"
                ep.step += 1
                ep.last_action = decision.action
                self.steps_total += 1
                overhead = max(0.0, (t_pub - trigger) * 1e3 - decision.latency_ms)
                if self._warm:  # the first inference warms up caches/allocator; keep it out of statistics
                    self.latencies.append(decision.latency_ms)
                    self.overheads.append(overhead)
                self._warm = True
                frame_age = time.time() - min(f.stamp for f in frames.values())
                top = decision.top(self.actions, 3)
                self._publish_status(decision=decision, extra={
                    "command_id": cmd.id, "overhead_ms": round(overhead, 3),
                    "frame_age_ms": round(frame_age * 1e3, 2), "in_hand": self.last_in_hand,
                    "after_stamp": ep_need_after, "frame_stamps": {k: f.stamp for k, f in frames.items()}})
                if self.p["log_steps"]:
                    self.get_logger().info(
                        f"ep {ep.id} step {ep.step - 1}: {decision.action:<16} "
                        + " ".join(f"{a}={p:.2f}" for a, p in top) + f"  {decision.latency_ms:.1f} ms")

        def _fresh_frames(self, ep: Episode):
            now = time.time()
            max_age = self.p["max_frame_age_s"]
            out = {}
            with self._frame_lock:
                for spec in self.bundle.cameras:
                    f = self.frames.get(spec.name)
                    if f is None:
                        return None, f"no frame yet from {self.cam_stats[spec.name].topic}"
                    if f.stamp <= ep.need_after:
                        return None, (f"latest {spec.name} frame is stamped {ep.need_after - f.stamp:.3f} s before "
                                      f"the last result/goal")
                    age = now - f.stamp
                    if age > max_age or age < -max_age:
                        return None, f"latest {spec.name} frame is {age:.3f} s old (max {max_age})"
                    out[spec.name] = f
            return out, ""

        # ---------------------------------------------------------------- outputs
        def _publish_command(self, action: str) -> Command:
            ep = self.episode
            cmd = Command(self._next_id, action, ep.id if ep is not None else 0)
            self._next_id += 1
            self.command_pub.publish(self._String(data=cmd.to_json()))
            return cmd

        def _finish(self, outcome: str, *, send_stop: bool, reason: str = "") -> None:
            ep = self.episode
            if ep is None or ep.state == "finished":
                return
            if send_stop:
                self._publish_command(STOP)
            ep.state, ep.outcome, ep.reason, ep.pending = "finished", outcome, reason, None
            with self._inference_mode():  # the KV-cache tensors were written under inference mode
                self.runner.end_episode()
            text = f"episode {ep.id} finished after {ep.step} steps: {outcome}" + (f" ({reason})" if reason else "")
            # (rclpy refuses different severities from one call site, hence two calls)
            if outcome == "ended":
                self.get_logger().info(text)
            else:
                self.get_logger().warning(text)
            self._publish_status()

        def _publish_status(self, state: str | None = None, decision=None, extra: dict | None = None) -> None:
            ep = self.episode
            if state is None:
                if ep is None:
                    state = "idle"
                elif ep.state == "finished":
                    state = "finished"
                elif not self.ready:
                    state = "paused"
                else:
                    state = ep.state
            st = {"stamp": time.time(), "state": state, "ready": self.ready,
                  "episode": ep.id if ep else None, "goal": ep.goal if ep else None,
                  "step": ep.step if ep else 0, "action": ep.last_action if ep else None,
                  "outcome": ep.outcome if ep else None, "reason": ep.reason if ep else ""}
            if decision is not None:
                st["decision_step"] = decision.step
                st["latency_ms"] = round(decision.latency_ms, 3)
                st["top"] = [[a, round(p, 4)] for a, p in decision.top(self.actions, 3)]
                st["probs"] = {a: round(float(p), 4) for a, p in zip(self.actions, decision.probs)}
            silent = {s.topic: s.silent_hint for s in self.cam_stats.values() if s.silent_hint}
            if silent:
                st["silent_cameras"] = silent
            if extra:
                st.update(extra)
            self.status_pub.publish(self._String(data=json.dumps(st)))

        def _publish_diagnostics(self) -> None:
            DS, KV = self._DiagnosticStatus, self._KeyValue
            arr = self._DiagnosticArray()
            arr.header.stamp = self.get_clock().now().to_msg()
            now_m, now_w = time.monotonic(), time.time()
            max_age = self.p["max_frame_age_s"]
            self._check_silent_cameras(now_m)
            for name, stats in self.cam_stats.items():
                with self._frame_lock:
                    f = self.frames.get(name)
                    rate = stats.rate(now_m)
                age = (now_w - f.stamp) if f is not None else float("inf")
                if stats.silent_hint:
                    level, msg = DS.ERROR, f"silent: {stats.silent_hint}"
                elif f is None:
                    level, msg = DS.ERROR, "no frame received"
                elif age > max_age:
                    level, msg = DS.WARN, f"stale: latest frame {age:.2f} s old"
                else:
                    level, msg = DS.OK, f"{rate:.1f} Hz"
                arr.status.append(DS(level=level, name=f"{NODE_NAME}: camera {name}", message=msg,
                                     hardware_id=stats.topic, values=[
                                         KV(key="topic", value=stats.topic), KV(key="rate_hz", value=f"{rate:.2f}"),
                                         KV(key="frame_age_s", value=f"{age:.3f}"),
                                         KV(key="received", value=str(stats.received)),
                                         KV(key="invalid", value=str(stats.invalid)),
                                         KV(key="last_error", value=stats.last_error[:200])]))
            lat = list(self.latencies)
            ovh = list(self.overheads)
            ep = self.episode

            def pct(xs, q):
                return f"{float(np.percentile(xs, q)):.2f}" if xs else "nan"

            arr.status.append(DS(level=DS.OK, name=f"{NODE_NAME}: inference", message=(
                f"{np.mean(lat):.1f} ms mean" if lat else "no steps yet"), hardware_id=self.p["device"], values=[
                    KV(key="latency_ms_mean", value=f"{np.mean(lat):.2f}" if lat else "nan"),
                    KV(key="latency_ms_p95", value=pct(lat, 95)),
                    KV(key="overhead_ms_mean", value=f"{np.mean(ovh):.3f}" if ovh else "nan"),
                    KV(key="overhead_ms_p95", value=pct(ovh, 95)),
                    KV(key="steps_total", value=str(self.steps_total))]))
            robot_level = DS.OK if self.ready else DS.WARN
            arr.status.append(DS(level=robot_level, name=f"{NODE_NAME}: episode",
                                 message=("ready" if self.ready else "robot not ready (paused)"), values=[
                                     KV(key="episode", value=str(ep.id if ep else "")),
                                     KV(key="state", value=ep.state if ep else "idle"),
                                     KV(key="step", value=str(ep.step if ep else 0)),
                                     KV(key="outcome", value=str(ep.outcome if ep else "")),
                                     KV(key="outstanding_command", value=str(ep.pending.id) if ep and ep.pending
                                        else "")]))
            self.diag_pub.publish(arr)
            if (ep is not None and ep.state != "finished") or any(st.silent_hint for st in self.cam_stats.values()):
                with self._lock:  # heartbeat; also while idle when a camera is silent, so the status says so
                    self._publish_status()

        def _check_silent_cameras(self, now_m: float) -> None:
            limit = self.p["camera_silent_s"]
            for name, stats in self.cam_stats.items():
                with self._frame_lock:
                    last = stats.times[-1] if stats.times else None
                quiet = now_m - (last if last is not None else self._t_start)
                if quiet < limit:
                    if stats.silent_hint:
                        self.get_logger().info(f"camera {name}: frames arrive again on {stats.topic}")
                    stats.silent_hint = ""
                    continue
                if stats.silent_hint:
                    continue
                stats.silent_hint = self._silence_hint(stats.topic, quiet, ever=last is not None)
                self.get_logger().error(f"camera {name}: {stats.silent_hint}")

        def _silence_hint(self, topic: str, quiet: float, ever: bool) -> str:
            """Why `topic` may be silent, from the ROS graph: no publisher (name differs?), or one that sends
            nothing through (driver stalled, frames too large for the transport)."""
            text = f"nothing received on {topic} for {quiet:.0f} s" + (" (it published before)" if ever else "")
            try:
                pubs = self.count_publishers(topic)
                images = sorted(n for n, types in self.get_topic_names_and_types()
                                if "sensor_msgs/msg/Image" in types and n != topic)
            except Exception:  # noqa: BLE001 - the hint is best effort; the report itself must go out
                return text
            if pubs == 0:
                text += "; no publisher on that topic"
                similar = [n for n in images if n.rsplit("/", 2)[-2:] == topic.rsplit("/", 2)[-2:]]
                if similar:
                    text += (f"; the same stream exists as {', '.join(similar)} (realsense-ros >= 4.55 adds a "
                             f"camera/ level): set the camera's *_camera_topic parameter to it")
                elif images:
                    text += f"; Image topics that exist: {', '.join(images[:6])}"
                else:
                    text += "; no Image topic exists at all (is the camera driver running? camera plugged in?)"
            else:
                text += (f"; {pubs} publisher(s) exist but no frame arrives (driver stalled, or frames larger "
                         f"than the transport passes: see config/fastdds_large_frames.xml)")
            return text

        # ---------------------------------------------------------------- shutdown
        def fail_safe(self, reason: str) -> None:
            """After an unexpected exception: end the episode (outcome error) and send `stop`."""
            got = self._lock.acquire(timeout=5.0)
            try:
                if self.episode is not None and self.episode.state != "finished":
                    self._finish("error", send_stop=True, reason=reason)
                else:
                    self._publish_command(STOP)
            except Exception as e:  # noqa: BLE001
                self.get_logger().error(f"fail-safe stop failed: {e!r}")
            finally:
                if got:
                    self._lock.release()

        def shutdown_stop(self, timeout: float = 5.0) -> None:
            """Publish `stop` (no command can follow it) and wait briefly for its delivery."""
            got = self._lock.acquire(timeout=timeout)
            try:
                self._closing = True
                if self.episode is not None and self.episode.state != "finished":
                    self._finish("shutdown", send_stop=True, reason="node shutting down")
                else:
                    self._publish_command(STOP)
            finally:
                if got:
                    self._lock.release()
            try:
                self.command_pub.wait_for_all_acked(Duration(seconds=1.0))
                self.status_pub.wait_for_all_acked(Duration(seconds=0.5))
            except Exception:  # noqa: BLE001 - best effort
                pass

    return PolicyNode


def main(argv: list[str] | None = None) -> int:
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    argv = sys.argv if argv is None else argv
    stop = threading.Event()
    got_signal = []

    def on_signal(signum, frame):  # noqa: ARG001
        got_signal.append(signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        try:
            node = build_node_class()()
        except ConfigError as e:
            print(f"{NODE_NAME}: error: {e}", file=sys.stderr, flush=True)
            return 2
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        errors: deque = deque(maxlen=10)
        while not stop.is_set() and rclpy.ok():
            try:
                executor.spin_once(timeout_sec=0.1)
            except Exception as e:  # noqa: BLE001 - a bug in a callback: stop the robot, keep serving
                node.get_logger().error(f"callback failed: {e!r}\n{traceback.format_exc()}")
                node.fail_safe(f"internal error: {e!r}")
                errors.append(time.monotonic())
                if len(errors) == errors.maxlen and errors[-1] - errors[0] < 60.0:
                    node.get_logger().fatal("10 internal errors within a minute: exiting")
                    node.shutdown_stop()
                    return 1
        if got_signal:
            node.get_logger().info(f"signal {signal.Signals(got_signal[0]).name}: stopping the robot and exiting")
        node.shutdown_stop()
        shutdown_executor(executor)
        return 0
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
