"""ROS 2 executor node: policy commands (flare_policy.protocol) -> one robot motion at a time.

Executables: `stretch_executor` (backend: driver | body | fake) and `locobot_executor` (backend: ros | fake).

* Subscribes `command_topic` (std_msgs/String JSON). Malformed commands are logged and ignored. `stop` halts the
  running motion at once (and is never acknowledged). A command that arrives while another one runs is refused
  with success=false -- motions are never queued. Commands are refused while the robot is not ready.
* Publishes one `result_topic` message per accepted or refused command (protocol.CommandResult: success,
  in_hand, stamp from the node clock when the motion finished, message), and readiness on `ready_topic`
  (std_msgs/Bool, transient local) on every change and every `ready_period_s`.
* Runstop (Stretch): `runstop_topic` (std_msgs/Bool, stretch_driver's /is_runstopped) and `mode_topic`
  (stretch_driver's /mode; modes in `paused_modes` pause). While runstopped or paused: readiness false, new
  commands refused, a running motion is halted. Release resumes.
* SIGINT / SIGTERM / shutdown: halt the motion, `driver.stop()`, readiness false, `driver.close()`, exit 0.
"""
from __future__ import annotations

import dataclasses
import queue
from collections import OrderedDict
import signal
import sys
import threading
import time
from typing import Callable, Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import Bool, String

from flare_policy import protocol

from .executors.base import DriverUnavailable, JointLimit, Outcome
from .executors.locobot import LocobotExecutor, LocobotParams
from .executors.locobot_backend import LocobotBackendConfig, LocobotRosBackend
from .executors.stretch import DEFAULT_LIMITS, StretchExecutor, StretchParams
from .executors.stretch_body_backend import BodyBackendConfig, StretchBodyBackend
from .executors.stretch_driver_backend import DriverBackendConfig, StretchDriverBackend

BACKENDS = {"stretch": ("driver", "body", "fake"), "locobot": ("ros", "fake")}

DESCRIPTIONS = {
    # node
    "backend": "How to talk to the robot. stretch: driver (stretch_driver over ROS 2) | body (stretch_body "
               "directly; cannot run next to stretch_driver) | fake (dry run). locobot: ros | fake.",
    "command_topic": "Policy commands, std_msgs/String JSON (flare_policy.protocol.Command)",
    "result_topic": "Command results, std_msgs/String JSON (flare_policy.protocol.CommandResult)",
    "ready_topic": "Robot readiness, std_msgs/Bool, transient local (false: runstop, paused, driver down)",
    "runstop_topic": "std_msgs/Bool runstop state (stretch_driver: /is_runstopped); empty = not used",
    "mode_topic": "std_msgs/String driver mode (stretch_driver: /mode); empty = not used",
    "paused_modes": "Driver modes in which the executor pauses (no commands accepted)",
    "runstop_timeout_s": "Not ready when nothing arrived on runstop_topic for this long (0 = no check)",
    "ready_period_s": "Readiness is republished at least this often (s)",
    "diagnostics_topic": "diagnostic_msgs/DiagnosticArray output; empty = none",
    "start_timeout_s": "Time allowed for the backend to connect at startup (s)",
    # stretch actions
    "move_m": "Base translation per move_ahead/move_back (m)",
    "rotate_deg": "Base rotation per rotate_left/right (deg)",
    "rotate_small_deg": "Base rotation per rotate_left/right_small (deg)",
    "lift_step_m": "Lift step for move_arm_up/down (m)",
    "lift_step_small_m": "Lift step for move_arm_up/down_small (m)",
    "arm_step_m": "Arm extension step for move_arm_out/in (m)",
    "arm_step_small_m": "Arm extension step for move_arm_out/in_small (m)",
    "wrist_step_deg": "Wrist yaw step for wrist_open/close (deg)",
    "wrist_yaw_sign": "+1: wrist_open = yaw - step (FLaRe simulator sign); -1 flips it (verify on the robot)",
    "gripper_close_pct": "Gripper target for pickup, Robotis % (FLaRe GraspTo(-10))",
    "gripper_open_pct": "Gripper target for dropoff, Robotis % (FLaRe GraspTo(30))",
    "grasp_min_aperture_m": "pickup reports 'held' if the fingers stop at or above this aperture (m)",
    "grasp_min_effort": "If > 0, 'held' also needs |gripper effort| >= this (backend units)",
    "min_joint_change_m": "A lift/arm target closer than this to the current position (at a limit) fails",
    "min_wrist_change_deg": "A wrist target closer than this to the current yaw (at a limit) fails",
    "limits.joint_lift": "[lower, upper] lift limits (m) used until the backend reports real ones",
    "limits.wrist_extension": "[lower, upper] arm extension limits (m) used until the backend reports real ones",
    "limits.joint_wrist_yaw": "[lower, upper] wrist yaw limits (rad) used until the backend reports real ones",
    "limits.joint_head_pan": "[lower, upper] head pan limits (rad) for the start pose",
    "limits.joint_head_tilt": "[lower, upper] head tilt limits (rad) for the start pose (negative looks down)",
    "start_head_pan_deg": "start_pose: head pan (deg; 0 looks ahead)",
    "start_head_tilt_deg": "start_pose: head tilt (deg; FLaRe's navigation camera looks 27 deg down: -27)",
    "start_lift_m": "start_pose: lift height (m)",
    "start_arm_m": "start_pose: arm extension (m; 0 = retracted)",
    "start_wrist_yaw_deg": "start_pose: wrist yaw (deg)",
    # stretch driver backend
    "joint_states_topic": "Joint states (stretch_driver: /stretch/joint_states; locobot: Interbotix joint "
                          "states for the camera tilt)",
    "joint_limits_topic": "stretch_driver joint limits (JointState: position = lower, velocity = upper)",
    "get_joint_states_service": "std_srvs/Trigger that makes stretch_driver publish joint_limits_topic",
    "stop_service": "std_srvs/Trigger that stops every joint (stretch_driver: /stop_the_robot)",
    "switch_to_position_service": "std_srvs/Trigger to switch stretch_driver to position mode",
    "trajectory_action": "control_msgs/FollowJointTrajectory action of stretch_driver",
    "auto_position_mode": "Switch stretch_driver to position mode when it is in navigation/trajectory mode",
    "is_homed_topic": "std_msgs/Bool homing state (stretch_driver: /is_homed); not homed = not ready; empty = "
                      "not checked",
    "home_service": "std_srvs/Trigger that homes the robot (stretch_driver: /home_the_robot, ~30 s)",
    "home_if_needed": "Call home_service when the robot reports it is not homed (the robot moves every joint!)",
    "battery_topic": "sensor_msgs/BatteryState (stretch_driver: /battery); empty = not watched",
    "low_battery_v": "Warn when the battery voltage is below this (V; stretch_body's low_voltage_alert is 10.5)",
    "tool_topic": "std_msgs/String end-of-arm tool (stretch_driver: /tool); empty = not checked",
    "expected_tool": "Not ready unless tool_topic reports this tool (the grasp check assumes the Stretch gripper)",
    "driver_diagnostics_topic": "diagnostic_msgs/DiagnosticArray of the driver; its ERRORs make the robot not "
                                "ready; empty = not watched",
    "driver_diagnostics_prefix": "Only statuses whose name starts with this are the driver's (stretch_driver's "
                                 "updater names them 'stretch_driver: ...')",
    "limits_wait_s": "How long to wait for get_joint_states_service before using the limits.* parameters (s)",
    "use_stop_service": "stop also calls stop_service; off by default because /stop_the_robot relaxes the "
                        "gripper (a held object drops)",
    "min_goal_interval_s": "Minimum time between two trajectory goals (stretch_driver rejects < 0.2 s)",
    "goal_timeout_s": "Time allowed for one trajectory goal (s)",
    "joint_state_timeout_s": "Joint states older than this make the robot not ready (s)",
    "gripper_settle_s": "The gripper is 'stopped' when its aperture stays still this long (s)",
    "gripper_timeout_s": "Time allowed for a gripper motion (s)",
    # stretch_body backend
    "motion_timeout_s": "stretch_body: wait_command timeout per motion (s)",
    "require_homed": "stretch_body: not ready until the robot is homed",
    # fake backend
    "fake_motion_time_s": "fake backend: seconds each motion takes (interruptible)",
    "fake_object_width_m": "fake backend: width of the object between the fingers at pickup (0 = nothing)",
    # locobot
    "linear_speed": "Cruise speed (m/s)",
    "angular_speed": "Cruise turn rate (rad/s)",
    "min_linear_speed": "Final-approach speed (m/s)",
    "min_angular_speed": "Final-approach turn rate (rad/s)",
    "slowdown_gain": "speed = clip(gain * remaining, min, cruise)",
    "rate_hz": "Twist republish rate while moving (Hz, >= 10)",
    "distance_tolerance_m": "A translation is done within this distance of the target (m)",
    "angle_tolerance_deg": "A rotation is done within this angle of the target (deg)",
    "timeout_factor": "A base motion fails after factor * nominal duration + timeout_margin_s",
    "timeout_margin_s": "See timeout_factor (s)",
    "odom_timeout_s": "Odometry older than this stops a base motion (s)",
    "tilt_step_deg": "Camera tilt per look_up/look_down (deg)",
    "tilt_min_deg": "Camera tilt limit looking up (deg, negative = up)",
    "tilt_max_deg": "Camera tilt limit looking down (deg)",
    "tilt_down_sign": "+1 if a positive tilt command looks down (Interbotix), else -1",
    "initial_tilt_deg": "Camera tilt (deg down) assumed until one is measured or commanded",
    "cmd_vel_topic": "geometry_msgs/Twist base command (Create 3: /locobot/mobile_base/cmd_vel)",
    "odom_topic": "nav_msgs/Odometry of the base (subscribed best effort)",
    "tilt_interface": "interbotix (JointSingleCommand) | fake (dry run) | none (look_up/look_down refused)",
    "tilt_command_topic": "interbotix_xs_msgs/JointSingleCommand topic",
    "tilt_joint": "Name of the camera tilt joint",
    "tilt_tolerance_rad": "Tilt is done within this angle of the target (rad)",
    "tilt_timeout_s": "Time allowed for a tilt motion when joint states are available (s)",
    "tilt_settle_s": "Wait after a tilt command when no joint states are available (s)",
}


class ParamReader:
    """declare_parameter with a ParameterDescriptor description for every parameter."""

    def __init__(self, node: Node):
        self.node = node

    def get(self, name: str, default, *, read_only: bool = False, description: Optional[str] = None):
        if self.node.has_parameter(name):
            return self.node.get_parameter(name).value
        desc = ParameterDescriptor(description=description or DESCRIPTIONS.get(name, name), read_only=read_only,
                                   dynamic_typing=isinstance(default, float) and not isinstance(default, bool))
        val = self.node.declare_parameter(name, default, desc).value
        if isinstance(default, float) and not isinstance(default, bool) and isinstance(val, int):
            val = float(val)
        return val

    def dataclass(self, cls, prefix: str = "", overrides: Optional[dict] = None):
        kwargs = {}
        base = cls()
        for f in dataclasses.fields(cls):
            default = getattr(base, f.name)
            if overrides and f.name in overrides:
                default = overrides[f.name]
            kwargs[f.name] = self.get(prefix + f.name, default)
        return cls(**kwargs)


class ExecutorNode(Node):
    def __init__(self, robot: str, driver_factory: Optional[Callable[["ExecutorNode"], object]] = None,
                 node_name: Optional[str] = None, start_driver: bool = True):
        if robot not in BACKENDS:
            raise ValueError(f"robot must be one of {sorted(BACKENDS)}")
        super().__init__(node_name or f"{robot}_executor")
        self.robot = robot
        P = ParamReader(self)
        self.P = P
        self.backend = P.get("backend", BACKENDS[robot][0], read_only=True)
        if driver_factory is None and self.backend not in BACKENDS[robot]:
            raise ValueError(f"backend must be one of {BACKENDS[robot]} for {robot}, got {self.backend!r}")
        self.command_topic = P.get("command_topic", protocol.COMMAND_TOPIC, read_only=True)
        self.result_topic = P.get("result_topic", protocol.RESULT_TOPIC, read_only=True)
        self.ready_topic = P.get("ready_topic", protocol.READY_TOPIC, read_only=True)
        # stretch_driver publishes runstop and mode; the other backends see the runstop themselves (body) or
        # have none (fake, LoCoBot), so these default to "not used" there.
        via_driver = robot == "stretch" and self.backend == "driver"
        self.runstop_topic = P.get("runstop_topic", "/is_runstopped" if via_driver else "", read_only=True)
        self.mode_topic = P.get("mode_topic", "/mode" if via_driver else "", read_only=True)
        self.paused_modes = list(P.get("paused_modes", ["runstopped", "homing", "stowing"]))
        self.runstop_timeout_s = P.get("runstop_timeout_s", 2.0 if via_driver else 0.0)
        self.ready_period_s = P.get("ready_period_s", 1.0)
        self.diagnostics_topic = P.get("diagnostics_topic", "/diagnostics", read_only=True)
        self.start_timeout_s = P.get("start_timeout_s", 10.0)

        self._lock = threading.Lock()
        self._busy: Optional[protocol.Command] = None
        # results of recently finished commands by (episode, id, action): a retransmitted command is answered
        # from here and never executed twice
        self._done: "OrderedDict[tuple[int, int, str], protocol.CommandResult]" = OrderedDict()
        self._queue: "queue.Queue[protocol.Command]" = queue.Queue(maxsize=1)
        self._closing = threading.Event()
        self._runstop: Optional[bool] = None
        self._runstop_t: Optional[float] = None
        self._mode: Optional[str] = None
        self._ready: Optional[bool] = None
        self._ready_reason = "starting"
        self._ready_pub_t = 0.0
        self._reason_logged, self._reason_log_t = "", 0.0
        self._counts = {"executed": 0, "refused": 0, "malformed": 0, "failed": 0}
        self._t_start = time.monotonic()

        self._cmd_group = MutuallyExclusiveCallbackGroup()
        self._mon_group = ReentrantCallbackGroup()
        self._drv_group = ReentrantCallbackGroup()

        # driver + executor core
        self.driver = driver_factory(self) if driver_factory else self._make_driver()
        self.core = self._make_core()

        latched = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._ready_pub = self.create_publisher(Bool, self.ready_topic, latched)
        self._result_pub = self.create_publisher(String, self.result_topic, 10)
        self._diag_pub = (self.create_publisher(DiagnosticArray, self.diagnostics_topic, 10)
                          if self.diagnostics_topic else None)
        self.create_subscription(String, self.command_topic, self._on_command, 10, callback_group=self._cmd_group)
        if self.runstop_topic:
            self.create_subscription(Bool, self.runstop_topic, self._on_runstop, 10, callback_group=self._mon_group)
        if self.mode_topic:
            self.create_subscription(String, self.mode_topic, self._on_mode, 10, callback_group=self._mon_group)

        if start_driver:
            self.driver.start(self.start_timeout_s)  # DriverUnavailable propagates to main()
        self._publish_ready(False, "starting up", force=True)
        self.create_timer(0.1, self._on_timer, callback_group=self._mon_group)
        if self._diag_pub is not None:
            self.create_timer(1.0, self._publish_diagnostics, callback_group=self._mon_group)
        self._worker = threading.Thread(target=self._work, name="executor-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"{robot} executor started (backend={self.backend}); commands on {self.command_topic}, "
            f"results on {self.result_topic}, readiness on {self.ready_topic}"
            + (f", runstop {self.runstop_topic}" if self.runstop_topic else "")
            + (f", mode {self.mode_topic}" if self.mode_topic else ""))

    # -- construction -----------------------------------------------------------------------------------
    def _log_info(self, msg: str) -> None:
        self.get_logger().info(msg)

    def _make_driver(self):
        P, b = self.P, self.backend
        if self.robot == "stretch":
            sp = P.dataclass(StretchParams)
            if b == "driver":
                cfg = P.dataclass(DriverBackendConfig, overrides={"mode_topic": self.mode_topic or "/mode"})
                cfg.gripper_close_pct, cfg.gripper_open_pct = sp.gripper_close_pct, sp.gripper_open_pct
                return StretchDriverBackend(self, cfg, callback_group=self._drv_group,
                                            fallback_limits=self.param_limits())
            if b == "body":
                cfg = P.dataclass(BodyBackendConfig)
                cfg.gripper_close_pct, cfg.gripper_open_pct = sp.gripper_close_pct, sp.gripper_open_pct
                return StretchBodyBackend(cfg, log=self._log_info)
            from .executors.fake import FakeStretchDriver
            return FakeStretchDriver(motion_time_s=P.get("fake_motion_time_s", 0.5),
                                     object_width_m=P.get("fake_object_width_m", 0.03), log=self._log_info)
        if b == "ros":
            cfg = P.dataclass(LocobotBackendConfig)
            return LocobotRosBackend(self, cfg, callback_group=self._drv_group)
        from .executors.fake import FakeLocobotDriver
        return FakeLocobotDriver(log=self._log_info)

    def param_limits(self) -> dict:
        """The `limits.*` parameters: used until (or, without /get_joint_states, instead of) the robot's own."""
        limits = {}
        for joint, lim in DEFAULT_LIMITS.items():
            lo, hi = self.P.get(f"limits.{joint}", [lim.lower, lim.upper])
            limits[joint] = JointLimit(float(lo), float(hi))
        return limits

    def _make_core(self):
        P = self.P
        if self.robot == "stretch":
            params = P.dataclass(StretchParams)
            return StretchExecutor(self.driver, params, logger=self.get_logger(), default_limits=self.param_limits())
        return LocobotExecutor(self.driver, P.dataclass(LocobotParams), logger=self.get_logger())

    # -- readiness ----------------------------------------------------------------------------------------
    def _on_runstop(self, msg: Bool) -> None:
        self._runstop = bool(msg.data)
        self._runstop_t = time.monotonic()

    def _on_mode(self, msg: String) -> None:
        self._mode = msg.data

    def readiness(self) -> tuple[bool, str, bool]:
        """(ready, reason, pause): pause = runstop-like reasons that must also halt a running motion."""
        reasons, pause = [], False
        if self._closing.is_set():
            return False, "shutting down", True
        if self._runstop:
            reasons.append(f"runstop engaged ({self.runstop_topic})")
            pause = True
        if self.runstop_topic and self.runstop_timeout_s > 0:
            age = None if self._runstop_t is None else time.monotonic() - self._runstop_t
            if age is None and time.monotonic() - self._t_start > self.runstop_timeout_s:
                reasons.append(f"nothing received on {self.runstop_topic} (is the robot driver running?)")
            elif age is not None and age > self.runstop_timeout_s:
                reasons.append(f"{self.runstop_topic} silent for {age:.1f} s (robot driver down?)")
        if self._mode is not None and self._mode in self.paused_modes:
            reasons.append(f"driver mode is {self._mode}")
            pause = True
        try:
            if self.core.is_runstopped():
                reasons.append("runstop engaged (reported by the backend)")
                pause = True
            ok, why = self.core.is_ready()
            if not ok:
                reasons.append(why)
        except Exception as e:  # a failing backend query means "not ready", never a crash
            reasons.append(f"backend status error: {e}")
        return (not reasons), "; ".join(reasons), pause

    def _on_timer(self) -> None:
        ready, reason, pause = self.readiness()
        self._publish_ready(ready, reason)
        if not ready and pause:
            with self._lock:
                busy = self._busy
            if busy is not None:
                self.get_logger().warning(f"halting command {busy.id} ({busy.action}): {reason}")
                self.core.halt(reason)

    def _publish_ready(self, ready: bool, reason: str, force: bool = False) -> None:
        now = time.monotonic()
        changed = ready != self._ready
        if ready and changed:
            self.get_logger().info("robot ready")
        elif not ready and (changed or (reason != self._reason_logged and now - self._reason_log_t >= 5.0)):
            # every change of state, and a changed reason at most every 5 s (reasons may carry ages)
            self._reason_logged, self._reason_log_t = reason, now
            self.get_logger().warning(f"robot not ready: {reason}")
        self._ready, self._ready_reason = ready, reason
        if changed or force or now - self._ready_pub_t >= self.ready_period_s:
            self._ready_pub_t = now
            try:
                self._ready_pub.publish(Bool(data=bool(ready)))
            except Exception:
                pass

    # -- commands -----------------------------------------------------------------------------------------
    def _on_command(self, msg: String) -> None:
        try:
            cmd = protocol.Command.from_json(msg.data)
        except protocol.ProtocolError as e:
            self._counts["malformed"] += 1
            self.get_logger().warning(f"ignoring malformed command: {e}")
            return
        if cmd.action == protocol.STOP:
            with self._lock:
                busy = self._busy
            self.get_logger().info("stop command" + (f": halting command {busy.id} ({busy.action})" if busy else ""))
            self.core.halt("stop command")
            return
        key = (cmd.episode, cmd.id, cmd.action)
        with self._lock:
            busy = self._busy
            if busy is not None:
                if (busy.episode, busy.id, busy.action) == key:
                    return  # a retransmission of the running command: its result will come
                refusal = (f"busy: command {busy.id} ({busy.action}) is still running; "
                           "motions are never queued")
            elif key in self._done:
                cached = self._done[key]
                self.get_logger().info(f"command {cmd.id} ({cmd.action}) repeated: resending its result")
                self._result_pub.publish(String(data=cached.to_json()))
                return
            else:
                ready, reason, _ = self.readiness()
                refusal = None if ready else f"robot not ready: {reason}"
                if refusal is None:
                    err = self.core.validate(cmd.action)
                    refusal = err
                if refusal is None:
                    self._busy = cmd
                    self._queue.put_nowait(cmd)
                    return
        self._counts["refused"] += 1
        self.get_logger().warning(f"refused command {cmd.id} ({cmd.action}): {refusal}")
        self._publish_result(cmd, Outcome(False, self.core.in_hand, refusal))

    def _work(self) -> None:
        while not self._closing.is_set():
            try:
                cmd = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            t0 = time.monotonic()
            try:
                outcome = self.core.execute(cmd.action)
            except Exception as e:  # a bug in a backend must not kill the node
                self.get_logger().error(f"command {cmd.id} ({cmd.action}) raised: {e!r}")
                outcome = Outcome(False, self.core.in_hand, f"executor error: {e}")
            result = self._make_result(cmd, outcome)
            with self._lock:
                self._busy = None  # free before publishing: the policy may answer immediately
                self._done[(cmd.episode, cmd.id, cmd.action)] = result
                while len(self._done) > 64:
                    self._done.popitem(last=False)
            self._counts["executed" if outcome.success else "failed"] += 1
            text = (f"command {cmd.id} ({cmd.action}) -> {'ok' if outcome.success else 'FAILED'} "
                    f"in {time.monotonic() - t0:.2f} s: {outcome.message}")
            try:
                # (rclpy forbids one call site logging at two severities)
                if outcome.success:
                    self.get_logger().info(text)
                else:
                    self.get_logger().warning(text)
                self._result_pub.publish(String(data=result.to_json()))
            except Exception as e:  # never let the worker die: the next command must still run
                print(f"executor worker: {e!r}", file=sys.stderr, flush=True)

    def _make_result(self, cmd: protocol.Command, outcome: Outcome) -> protocol.CommandResult:
        stamp = self.get_clock().now().nanoseconds * 1e-9
        return protocol.CommandResult(cmd.id, cmd.action, bool(outcome.success), bool(outcome.in_hand), stamp,
                                      outcome.message[:500])

    def _publish_result(self, cmd: protocol.Command, outcome: Outcome) -> None:
        self._result_pub.publish(String(data=self._make_result(cmd, outcome).to_json()))

    # -- diagnostics --------------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        st = DiagnosticStatus()
        st.name = f"flare_bringup: {self.robot} executor"
        st.hardware_id = f"{self.robot}/{self.backend}"
        st.level = DiagnosticStatus.OK if self._ready else DiagnosticStatus.WARN
        st.message = "ready" if self._ready else f"not ready: {self._ready_reason}"
        with self._lock:
            busy = self._busy
        vals = {"backend": self.backend, "busy": f"{busy.id} {busy.action}" if busy else "",
                "in_hand": str(self.core.in_hand), **{k: str(v) for k, v in self._counts.items()}}
        if getattr(self.driver, "limits_source", None) is not None:
            vals["joint_limits_source"] = self.driver.limits_source or "not yet known"
        if getattr(self.driver, "battery_voltage", None) is not None:
            vals["battery_v"] = f"{self.driver.battery_voltage:.2f}"
        st.values = [KeyValue(key=k, value=v) for k, v in vals.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [st]
        try:
            self._diag_pub.publish(arr)
        except Exception:
            pass

    # -- shutdown -----------------------------------------------------------------------------------------
    def shutdown(self, reason: str = "shutdown") -> None:
        """Halt the motion, stop the robot, announce not-ready, release the backend. Idempotent."""
        if self._closing.is_set():
            return
        self._closing.set()
        self.get_logger().info(f"{reason}: stopping the robot")
        self.core.halt(reason)
        self._publish_ready(False, reason, force=True)
        self._worker.join(timeout=5.0)
        try:
            self.driver.close()
        except Exception as e:
            self.get_logger().warning(f"driver.close() failed: {e}")


def run(robot: str, args=None, driver_factory=None) -> int:
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    got = []

    def on_signal(signum, _frame):
        got.append(signal.Signals(signum).name)
        stop.set()

    def install():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)

    install()
    try:
        node = ExecutorNode(robot, driver_factory=driver_factory)
    except (DriverUnavailable, ValueError) as e:
        print(f"[{robot}_executor] ERROR: {e}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 1
    install()  # stretch_body's Robot.startup() installs its own SIGINT/SIGTERM handlers; ours must win
    # Motions run on the node's own worker thread; every callback is short (store, validate, hand over, halt),
    # so one executor thread keeps them responsive while a motion runs.
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    finally:
        node.shutdown(f"{got[0]} received" if got else "shutdown")
        t_end = time.monotonic() + 0.3  # let 'not ready' and the last result go out
        while time.monotonic() < t_end and rclpy.ok():
            executor.spin_once(timeout_sec=0.05)
        executor.remove_node(node)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def stretch_main(args=None) -> None:
    sys.exit(run("stretch", args))


def locobot_main(args=None) -> None:
    sys.exit(run("locobot", args))


if __name__ == "__main__":
    stretch_main()
