"""Helpers for the ROS tests: random bundles, node processes, and an in-test harness node that plays the
robot (cameras + executor) and records everything the policy node publishes."""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMITTED_SIM_BUNDLE = ROOT / "models" / "sim_tiny_bc"


def committed_sim_bundle() -> Path | None:
    """models/sim_tiny_bc if it is committed (tracked by git; a bundle being trained there does not count), or
    present in a tree that is not a git checkout."""
    import subprocess

    if not (COMMITTED_SIM_BUNDLE / "policy.json").is_file():
        return None
    try:
        out = subprocess.run(["git", "ls-files", "--error-unmatch", "models/sim_tiny_bc/policy.json",
                              "models/sim_tiny_bc/model.safetensors"], cwd=ROOT, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return COMMITTED_SIM_BUNDLE
    if out.returncode == 0:
        return COMMITTED_SIM_BUNDLE
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True)
    return None if inside.returncode == 0 else COMMITTED_SIM_BUNDLE

rclpy = pytest.importorskip("rclpy")

from flare_bringup.rosproc import NodeProcess, ros_env, unique_domain_id  # noqa: E402

_BUNDLES: dict = {}


def tiny_bundle(tmp_root: Path, embodiment: str = "sim", seed: int = 0, favour: str | None = None) -> Path:
    """A random-weight tiny CNN bundle (cached per directory); `favour` biases the actor towards one action
    so it is always chosen (e.g. "end")."""
    key = (str(tmp_root), embodiment, seed, favour)
    if key in _BUNDLES:
        return _BUNDLES[key]
    import torch

    from flare_policy.bundle import save_bundle, sim_camera
    from flare_policy.embodiments import get_embodiment
    from flare_policy.model import PolicyNet, tiny

    torch.manual_seed(seed)
    # the ROS tests' timings were tuned on these exact random weights (how soon a random policy ends or acts);
    # goal FiLM would draw other ones, and the node code is the same either way
    net = PolicyNet(tiny(visual_goal_film=False))
    if favour:
        with torch.no_grad():
            net.actor.linear.bias[get_embodiment(embodiment).actions.index(favour)] = 50.0
    out = save_bundle(Path(tmp_root) / f"tiny_{embodiment}_{seed}_{favour or 'random'}", net,
                      embodiment=embodiment, cameras=[sim_camera()], text_encoder={"kind": "minilm"},
                      provenance={"note": "random weights for tests"})
    _BUNDLES[key] = out
    return out


def policy_node(name: str, bundle, env: dict, log_dir, **params) -> NodeProcess:
    p = {"bundle": str(bundle), "threads": 1, "log_steps": False}
    p.update(params)
    return NodeProcess.python_module(name, "flare_policy.node", p, env=env, log_dir=log_dir)


def sim_robot(name: str, env: dict, log_dir, **params) -> NodeProcess:
    return NodeProcess.python_module(name, "flare_bringup.sim_robot", params, env=env, log_dir=log_dir)


def make_image(h=56, w=56, encoding="rgb8", stamp=None, data=None, step=None, value=None):
    from sensor_msgs.msg import Image

    msg = Image()
    t = time.time() if stamp is None else stamp
    msg.header.stamp.sec = int(t)
    msg.header.stamp.nanosec = int((t - int(t)) * 1e9)
    msg.header.frame_id = "camera"
    msg.height, msg.width, msg.encoding = h, w, encoding
    msg.step = w * 3 if step is None else step
    if data is None:
        rng = np.random.default_rng(int(t * 1000) % 2**32)
        arr = rng.integers(0, 256, (h, msg.step), dtype=np.uint8) if value is None else \
            np.full((h, msg.step), value, np.uint8)
        data = arr.tobytes()
    msg.data = data
    return msg


class Harness:
    """Runs in the test process on its own rclpy context/domain: publishes frames, goals, readiness and
    results; records commands, status and outcomes with receive times."""

    def __init__(self, domain_id: int, camera_topic="/camera/color/image_raw", name="harness"):
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import Bool, String
        from diagnostic_msgs.msg import DiagnosticArray

        self.ctx = Context()
        rclpy.init(context=self.ctx, domain_id=domain_id)
        self.node = Node(name, context=self.ctx)
        sensor = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=1)
        reliable = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=50)
        latched = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.String, self.Bool = String, Bool
        self.image_pub = self.node.create_publisher(Image, camera_topic, sensor)
        self.goal_pub = self.node.create_publisher(String, "/flare/goal", reliable)
        self.result_pub = self.node.create_publisher(String, "/flare/command_result", reliable)
        self.ready_pub = self.node.create_publisher(Bool, "/flare/robot_ready", latched)
        self.lock = threading.RLock()
        self.errors: list[str] = []  # exceptions raised in harness callbacks
        self.commands: list[tuple[float, dict]] = []
        self.status: list[tuple[float, dict]] = []
        self.outcomes: list[tuple[float, dict]] = []
        self.diagnostics: list = []
        self.frames_seen: list[tuple[float, float]] = []  # (recv time, stamp) of frames on the camera topic
        self.on_command = None  # callback(cmd dict) for executor behaviour
        self.node.create_subscription(String, "/flare/command", self._on_command, reliable)
        self.node.create_subscription(String, "/flare/status", self._rec(self.status), reliable)
        self.node.create_subscription(String, "/flare/episode_outcome", self._rec(self.outcomes), reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self.diagnostics.append(m), 10)
        self.results: list[tuple[float, dict]] = []
        self.node.create_subscription(String, "/flare/command_result", self._on_result, reliable)
        # executor behaviour: None (do nothing), "auto" (answer every motion command), "silent" (never answer)
        self.mode = None
        self.auto_delay = 0.01
        self.stale_after_result = True  # publish a frame stamped before the result right after it
        self.result_stamp_offset = 0.0
        self.sent_results: dict[int, float] = {}  # id -> result stamp
        self.stale_stamps: list[float] = []
        self.outstanding = None
        self.violations: list[str] = []
        self._pump = None
        self._pump_stop = threading.Event()
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while self.ctx.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception as e:  # noqa: BLE001
                if not self.ctx.ok():
                    break
                self.errors.append(repr(e))

    def _rec(self, store):
        def cb(msg):
            try:
                obj = json.loads(msg.data)
            except ValueError:
                return
            with self.lock:
                store.append((time.time(), obj))
        return cb

    def _on_result(self, msg):
        try:
            res = json.loads(msg.data)
        except ValueError:
            return
        with self.lock:
            self.results.append((time.time(), res))
            if self.outstanding == res.get("id"):
                self.outstanding = None

    def _on_command(self, msg):
        try:
            cmd = json.loads(msg.data)
            cmd["id"], cmd["action"]
        except (ValueError, KeyError, TypeError):
            return  # malformed commands published by a test itself
        with self.lock:
            self.commands.append((time.time(), cmd))
            if cmd["action"] == "stop":
                self.outstanding = None
            else:
                if self.outstanding is not None:
                    self.violations.append(f"command {cmd['id']} while {self.outstanding} is outstanding")
                self.outstanding = cmd["id"]
        if self.on_command is not None:
            self.on_command(cmd)
        if cmd["action"] != "stop" and self.mode == "auto":
            threading.Timer(self.auto_delay, self._answer, args=(cmd,)).start()

    def _answer(self, cmd):
        if self.mode != "auto" or not self.ctx.ok():
            return
        stamp = time.time() + self.result_stamp_offset
        with self.lock:
            self.sent_results[cmd["id"]] = stamp
            if self.outstanding == cmd["id"]:
                self.outstanding = None
        self.publish_result(cmd, stamp=stamp)
        if self.stale_after_result:
            st = stamp - 0.05
            with self.lock:
                self.stale_stamps.append(st)
            self.publish_frame(stamp=st)

    # -------------------------------------------------------------- camera pump
    def start_pump(self, rate: float = 20.0, **frame_kw):
        self.stop_pump()
        self._pump_stop = threading.Event()

        def run(ev=self._pump_stop):
            while not ev.is_set() and self.ctx.ok():
                kw = dict(frame_kw)
                if "age" in kw:
                    kw["stamp"] = time.time() - kw.pop("age")
                try:
                    self.publish_frame(**kw)
                except Exception:  # noqa: BLE001 - context shut down
                    return
                ev.wait(1.0 / rate)

        self._pump = threading.Thread(target=run, daemon=True)
        self._pump.start()

    def stop_pump(self):
        if self._pump is not None:
            self._pump_stop.set()
            self._pump.join(timeout=2.0)
            self._pump = None

    # -------------------------------------------------------------- queries
    def statuses(self, episode=None, with_command=False):
        with self.lock:
            out = [st for _, st in self.status]
        if episode is not None:
            out = [st for st in out if st.get("episode") == episode]
        if with_command:
            out = [st for st in out if st.get("command_id") is not None and "top" in st]
        return out

    def episode_commands(self, episode):
        with self.lock:
            return [c for _, c in self.commands if c.get("episode") == episode]

    def start_episode(self, goal: str, timeout: float = 20.0) -> int:
        """Publish a goal and return the episode id the node gives it."""
        with self.lock:
            n0 = len(self.status)
        self.publish_goal(goal)
        found = []

        def pred():
            for _, st in self.status[n0:]:
                if st.get("goal") == goal and st.get("episode") is not None and st.get("state") != "finished":
                    found.append(st["episode"])
                    return True
            return False
        assert self.wait(pred, timeout), f"the node did not start an episode for {goal!r}"
        return found[0]

    def outcome_of(self, episode, timeout=10.0):
        got = []

        def pred():
            for _, st in self.status:
                if st.get("episode") == episode and st.get("outcome"):
                    got.append(st)
                    return True
            return False
        self.wait(pred, timeout)
        return got[0] if got else None

    # -------------------------------------------------------------- actions
    def publish_frame(self, **kw):
        msg = kw.pop("msg", None) or make_image(**kw)
        self.image_pub.publish(msg)
        return msg

    def publish_frames_until(self, pred, timeout=15.0, period=0.2) -> bool:
        """Valid frames at 5 Hz (as a camera streams) until `pred` holds: best-effort camera QoS may drop any
        single frame on a loaded machine, so "acts on a valid frame" must not hang on exactly one."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.publish_frame()
            if self.wait(pred, period):
                return True
        return self.wait(pred, 0.0)

    def publish_goal(self, text: str):
        self.goal_pub.publish(self.String(data=text))

    def publish_ready(self, ready: bool):
        self.ready_pub.publish(self.Bool(data=ready))

    def publish_result(self, cmd: dict, success=True, in_hand=False, stamp=None, message=""):
        from flare_policy.protocol import CommandResult

        r = CommandResult(cmd["id"], cmd["action"], success, in_hand, time.time() if stamp is None else stamp, message)
        self.result_pub.publish(self.String(data=r.to_json()))
        return r

    def wait_subscribers(self, pub, n=1, timeout=20.0):
        return self.wait(lambda: pub.get_subscription_count() >= n, timeout)

    def wait(self, pred, timeout=10.0, period=0.02):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                ok = pred()
            if ok:
                return ok
            time.sleep(period)
        with self.lock:
            return pred()

    def motion_commands(self):
        with self.lock:
            return [c for _, c in self.commands if c["action"] != "stop"]

    def stops(self):
        with self.lock:
            return [c for _, c in self.commands if c["action"] == "stop"]

    def close(self):
        self.stop_pump()
        self.mode = None
        try:
            self.executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
        finally:
            if self.ctx.ok():
                rclpy.shutdown(context=self.ctx)
        self._thread.join(timeout=2.0)


def new_domain() -> tuple[int, dict]:
    d = unique_domain_id()
    return d, ros_env(d)


def python() -> str:
    return sys.executable
