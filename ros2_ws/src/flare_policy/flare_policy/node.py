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

Layering: this module is the only one of flare_policy that imports rclpy and holds only ROS I/O (parameters,
subscriptions, publishers, /diagnostics, shutdown). The episode logic is flare_policy.episode, the parameter
table and bundle loading flare_policy.node_params, the policy flare_policy.runner, the message format
flare_policy.protocol: all ROS-free.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
import traceback
from collections import deque

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, String

from .episode import EpisodeController
from .node_params import ConfigError, PolicyNodeParams, camera_key, check_params, check_value, load_runner
from .rosutil import shutdown_executor

NODE_NAME = "policy_node"
SENSOR_QOS = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=1,
                        durability=DurabilityPolicy.VOLATILE)
# A reliable KEEP_LAST writer drops samples a slow reader has not yet acknowledged once `depth` newer ones exist:
# 100 lets an observer (rosbag, a monitor on a loaded machine) fall ~100 steps behind without losing a command or status.
RELIABLE = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=100)
LATCHED = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


class PolicyNode(Node):
    """ROS I/O around an EpisodeController: parameters, camera/goal/result/ready subscriptions, command and
    status publishers, /diagnostics, `~/cancel`."""

    def __init__(self, *, runner=None, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.p = self._declare_params()
        runner = runner if runner is not None else load_runner(self.p, self.get_logger())
        bundle = runner.bundle
        emb = bundle.embodiment.name
        if self.p["embodiment"] and self.p["embodiment"] != emb:
            raise ConfigError(f"embodiment parameter is {self.p['embodiment']!r} but bundle {self.p['bundle']} is "
                              f"for {emb!r}")
        topics = {spec.name: self.p[f"{camera_key(spec.name)}_camera_topic"] for spec in bundle.cameras}

        self.policy_group = MutuallyExclusiveCallbackGroup()
        self.camera_group = ReentrantCallbackGroup()
        self.diag_group = MutuallyExclusiveCallbackGroup()
        self.command_pub = self.create_publisher(String, self.p["command_topic"], RELIABLE)
        self.status_pub = self.create_publisher(String, self.p["status_topic"], RELIABLE)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._wake = self.create_guard_condition(lambda: self.episodes.step(), callback_group=self.policy_group)
        self.episodes = EpisodeController(
            runner, self.p, topics, logger=self.get_logger(), wake=self._wake.trigger,
            send_command=lambda text: self.command_pub.publish(String(data=text)),
            send_status=lambda text: self.status_pub.publish(String(data=text)))

        # cameras: latest frame only, in their own group so inference never blocks them
        self.camera_subs = [
            self.create_subscription(Image, topic, lambda msg, name=name: self.episodes.on_image(name, msg),
                                     SENSOR_QOS, callback_group=self.camera_group)
            for name, topic in topics.items()]
        goal_qos = LATCHED if self.p["goal_durability"] == "transient_local" else QoSProfile(
            reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1)
        self.create_subscription(String, self.p["goal_topic"], lambda msg: self.episodes.on_goal(msg.data), goal_qos,
                                 callback_group=self.policy_group)
        self.create_subscription(String, self.p["result_topic"], lambda msg: self.episodes.on_result(msg.data),
                                 RELIABLE, callback_group=self.policy_group)
        self.create_subscription(Bool, self.p["ready_topic"], lambda msg: self.episodes.on_ready(msg.data), LATCHED,
                                 callback_group=self.policy_group)
        self.create_timer(0.05, self.episodes.step, callback_group=self.policy_group)  # timeouts, pauses
        self.create_timer(self.p["diagnostics_period_s"], self._publish_diagnostics, callback_group=self.diag_group)
        self._cancel_srv = None
        try:
            from std_srvs.srv import Trigger
            self._cancel_srv = self.create_service(Trigger, "~/cancel", self._on_cancel,
                                                   callback_group=self.policy_group)
        except ImportError:  # std_srvs is optional
            pass
        self.get_logger().info(
            f"policy ready: bundle {self.p['bundle']} ({emb}, {len(bundle.actions)} actions, cameras "
            + ", ".join(f"{name}<-{topic}" for name, topic in topics.items())
            + f"); goals on {self.p['goal_topic']}, commands on {self.p['command_topic']}")
        self.episodes.publish_status("idle")

    def _declare_params(self) -> dict:
        out = {}
        for name, (default, desc) in PolicyNodeParams.SPEC.items():
            d = ParameterDescriptor(description=desc, read_only=True)
            rng = PolicyNodeParams.RANGES.get(name)
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
            out[name] = check_value(name, value)
        return check_params(out)

    def _on_cancel(self, request, response):  # noqa: ARG002
        response.success, response.message = self.episodes.cancel()
        return response

    # ---------------------------------------------------------------- /diagnostics (diagnostics group)
    def _publish_diagnostics(self) -> None:
        DS, KV = DiagnosticStatus, KeyValue
        ec = self.episodes
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        now_m, now_w = time.monotonic(), time.time()
        max_age = self.p["max_frame_age_s"]
        ec.check_silent_cameras(now_m, self._silence_hint)
        for name, stats in ec.cam_stats.items():
            with ec.frame_lock:
                f = ec.frames.get(name)
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
        lat, ovh, ep = list(ec.latencies), list(ec.overheads), ec.episode

        def pct(xs, q):
            return f"{float(np.percentile(xs, q)):.2f}" if xs else "nan"

        arr.status.append(DS(level=DS.OK, name=f"{NODE_NAME}: inference", message=(
            f"{np.mean(lat):.1f} ms mean" if lat else "no steps yet"), hardware_id=self.p["device"], values=[
                KV(key="latency_ms_mean", value=f"{np.mean(lat):.2f}" if lat else "nan"),
                KV(key="latency_ms_p95", value=pct(lat, 95)),
                KV(key="overhead_ms_mean", value=f"{np.mean(ovh):.3f}" if ovh else "nan"),
                KV(key="overhead_ms_p95", value=pct(ovh, 95)),
                KV(key="steps_total", value=str(ec.steps_total))]))
        arr.status.append(DS(level=DS.OK if ec.ready else DS.WARN, name=f"{NODE_NAME}: episode",
                             message=("ready" if ec.ready else "robot not ready (paused)"), values=[
                                 KV(key="episode", value=str(ep.id if ep else "")),
                                 KV(key="state", value=ep.state if ep else "idle"),
                                 KV(key="step", value=str(ep.step if ep else 0)),
                                 KV(key="outcome", value=str(ep.outcome if ep else "")),
                                 KV(key="outstanding_command", value=str(ep.pending.id) if ep and ep.pending
                                    else "")]))
        self.diag_pub.publish(arr)
        if (ep is not None and ep.state != "finished") or any(s.silent_hint for s in ec.cam_stats.values()):
            with ec.lock:  # heartbeat; also while idle when a camera is silent, so the status says so
                ec.publish_status()

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
        self.episodes.fail_safe(reason)

    def shutdown_stop(self, timeout: float = 5.0) -> None:
        """Publish `stop` (no command can follow it) and wait briefly for its delivery."""
        self.episodes.shutdown_stop(timeout)
        try:
            self.command_pub.wait_for_all_acked(Duration(seconds=1.0))
            self.status_pub.wait_for_all_acked(Duration(seconds=0.5))
        except Exception:  # noqa: BLE001 - best effort
            pass


def main(argv: list[str] | None = None) -> int:
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
            node = PolicyNode()
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
