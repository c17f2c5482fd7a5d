"""policy_node's parameters and bundle loading, ROS-free: the declared parameters with their help and ranges,
their checks, and the PolicyRunner a parameter set describes (bundle, encoders, action selection, context).

The rclpy node (flare_policy.node) declares exactly `PolicyNodeParams.SPEC`; the launch tests read that table to
check every parameter a launch file or YAML config sets.
"""
from __future__ import annotations

import math

from .protocol import COMMAND_TOPIC, GOAL_TOPIC, READY_TOPIC, RESULT_TOPIC, STATUS_TOPIC

EMBODIMENT_CHOICES = ("stretch", "locobot", "sim", "sim_locobot")
CAMERA_DEFAULT_TOPICS = {
    "navigation": "/camera/color/image_raw",  # Stretch head D435i (realsense-ros <= 4.54 naming)
    "manipulation": "/gripper_camera/color/image_rect_raw",  # Stretch D405: no RGB module -> image_rect_raw
}
ACTION_SELECTIONS = ("bundle", "greedy", "sample")
DEFAULT_KV_WINDOW = 1000  # bundles that do not name their training context


class ConfigError(Exception):
    """Bad parameters or bundle: reported as one line, exit status 2."""


def camera_key(camera_name: str) -> str:
    """Bundle camera name -> parameter prefix: raw_navigation_camera -> navigation."""
    key = camera_name
    if key.startswith("raw_"):
        key = key[4:]
    if key.endswith("_camera"):
        key = key[: -len("_camera")]
    return key


class PolicyNodeParams:
    """Declared parameters: SPEC name -> (default, description); RANGES name -> ("int", lo, hi, step) or
    ("float", lo, hi), published as the parameters' descriptor ranges and checked by `check_value`."""

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



def check_value(name: str, value):
    """One declared parameter's value, type- and range-checked against its SPEC default; ConfigError if bad."""
    default = PolicyNodeParams.SPEC[name][0]
    rng = PolicyNodeParams.RANGES.get(name)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"parameter {name!r} must be a finite number, got {value!r}")
        value = float(value)
    elif type(value) is not type(default):
        raise ConfigError(f"parameter {name!r} must be {type(default).__name__}, got {value!r}")
    if rng and not rng[1] <= value <= rng[2]:
        raise ConfigError(f"parameter {name!r} must be in [{rng[1]}, {rng[2]}], got {value!r}")
    return value


def check_params(p: dict) -> dict:
    """The checks across a complete parameter set (after `check_value` on each); returns it."""
    if not p["bundle"]:
        raise ConfigError("parameter 'bundle' is required (a policy bundle directory)")
    if p["embodiment"] and p["embodiment"] not in EMBODIMENT_CHOICES:
        raise ConfigError(f"parameter 'embodiment' must be one of {EMBODIMENT_CHOICES}, got {p['embodiment']!r}")
    if p["action_selection"] not in ACTION_SELECTIONS:
        raise ConfigError(f"parameter 'action_selection' must be one of {ACTION_SELECTIONS}, "
                          f"got {p['action_selection']!r}")
    if p["goal_durability"] not in ("volatile", "transient_local"):
        raise ConfigError("parameter 'goal_durability' must be volatile or transient_local")
    for name, v in p.items():
        if name.endswith("_rotation") and v % 90:
            raise ConfigError(f"parameter {name!r} must be a multiple of 90, got {v}")
        if name.endswith("_topic") and (not v or " " in v):
            raise ConfigError(f"parameter {name!r} is not a valid topic name: {v!r}")
    return p


def load_runner(p: dict, logger):
    """The PolicyRunner that checked parameters `p` describe; ConfigError naming what is wrong.

    `logger` takes info/warning messages (the node passes its rclpy logger)."""
    import torch

    from .bundle import BundleError, load_bundle
    from .runner import PolicyRunner

    if p["threads"] > 0:
        torch.set_num_threads(p["threads"])
    torch.manual_seed(p["seed"])
    dev = p["device"]
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {dev!r} requested but CUDA is not available")
    try:
        torch.device(dev)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"parameter 'device': {e}") from None
    try:
        bundle = load_bundle(p["bundle"], device=dev)
    except BundleError as e:
        raise ConfigError(f"bundle: {e}") from None
    if p["embodiment"] and p["embodiment"] != bundle.embodiment.name:
        raise ConfigError(f"embodiment parameter is {p['embodiment']!r} but bundle {p['bundle']} is for "
                          f"{bundle.embodiment.name!r}")
    for spec in bundle.cameras:
        if f"{camera_key(spec.name)}_camera_topic" not in p:
            raise ConfigError(f"bundle camera {spec.name!r} has no topic parameter on this node")
    try:
        from .text import text_encoder_from_spec
        text = text_encoder_from_spec(bundle.text_encoder, device=dev, override_path=p["text_encoder_path"] or None)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"text encoder {bundle.text_encoder!r}: {e}") from None
    vision = None
    if bundle.config.vision == "dinov2":
        from .vision import VisionError, vision_provider_from_spec
        try:
            vision = vision_provider_from_spec(bundle.vision_encoder, device=dev,
                                               override_path=p["vision_encoder_path"] or None,
                                               quantize=p["vision_quantize"])
        except (VisionError, OSError) as e:
            raise ConfigError(f"vision encoder: {e}") from None
    check_encoders(bundle, text, vision, allow_mismatch=p["allow_encoder_mismatch"], warn=logger.warning)
    rotation = {c.name: p[f"{camera_key(c.name)}_camera_rotation"] for c in bundle.cameras}
    selection, kv_window = inference_settings(bundle.meta, p["action_selection"], p["kv_window"])
    logger.info(f"actions {selection} (seed {p['seed']}), context {kv_window} steps")
    return PolicyRunner(bundle, device=dev, kv_window=kv_window, greedy=selection == "greedy", seed=p["seed"],
                        text_encoder=text, vision=vision, camera_rotation=rotation)
