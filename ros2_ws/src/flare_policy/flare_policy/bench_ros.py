"""ROS benchmarks of the policy node (scripts, not tests): `flare-policy bench node|latency|soak`.

Each starts `policy_node` as a separate process in a private ROS domain and plays the robot in this process
(cameras + an *instant* executor: every command is answered at once, followed by fresh frames of every
camera), so what is measured is the node and the transport, not a robot.

    node      node overhead per step, model excluded: (frames published -> command received) - model time,
              measured from outside, and the node's own (result/frame callback -> command published) - model
              time. Target <= 5 ms.
    latency   frame -> command latency for `tiny` (sim bundle, 56x56) and `flare_small3` (random DINOv2-S +
              random T5, two 640x480 cameras, FLaRe preprocessing).
    soak      2 cameras x 30 Hz (640x480 rgb8) for N seconds while the policy steps: frames received vs sent,
              age of the frame each decision used (a backlog would show here; subscriptions are depth 1),
              step latency and the node's RSS over time.

Every function takes argv, prints a table and with --json a last-line JSON object, and returns an exit code.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

GOAL = "find a mug in the kitchen"
NAV, MANIP = "raw_navigation_camera", "raw_manipulation_camera"
TOPICS = {NAV: "/camera/color/image_raw", MANIP: "/gripper_camera/color/image_rect_raw"}


# ------------------------------------------------------------------------------------------------ helpers
def _stats(xs) -> dict:
    xs = sorted(float(x) for x in xs)
    if not xs:
        return {"n": 0}

    def pct(q):
        return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]
    return {"n": len(xs), "mean": round(statistics.fmean(xs), 3), "p50": round(pct(50), 3),
            "p95": round(pct(95), 3), "max": round(xs[-1], 3)}


def _fmt(s: dict) -> str:
    if not s.get("n"):
        return "n/a"
    return f"mean {s['mean']:.2f}  p50 {s['p50']:.2f}  p95 {s['p95']:.2f}  max {s['max']:.2f}"


# Fast DDS with its default transports drops most frames above ~512 kB between processes (a 640x480 rgb8 frame
# is 921 kB: measured 2-10 of 90 frames arrive at 30 Hz): shared-memory segments are too small and the UDP
# fallback overflows the default socket buffers. This profile (bigger SHM segments, 4 MB socket buffers) on
# *both* sides delivers 90/90. ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST replaces the transports with localhost
# UDP (no SHM), so the "shm" transport here relies on the private domain id for isolation instead.
FASTDDS_LARGE_FRAMES_XML = """<?xml version="1.0" encoding="UTF-8"?>
<profiles xmlns="http://www.eprosima.com">
  <transport_descriptors>
    <transport_descriptor>
      <transport_id>shm_large</transport_id>
      <type>SHM</type>
      <segment_size>16777216</segment_size>
    </transport_descriptor>
    <transport_descriptor>
      <transport_id>udp_large</transport_id>
      <type>UDPv4</type>
      <sendBufferSize>4194304</sendBufferSize>
      <receiveBufferSize>4194304</receiveBufferSize>
    </transport_descriptor>
  </transport_descriptors>
  <participant profile_name="flare_large_frames" is_default_profile="true">
    <rtps>
      <userTransports>
        <transport_id>shm_large</transport_id>
        <transport_id>udp_large</transport_id>
      </userTransports>
      <useBuiltinTransports>false</useBuiltinTransports>
    </rtps>
  </participant>
</profiles>
"""
TRANSPORTS = ("shm", "localhost", "default")


def transport_env(kind: str, tmp: Path) -> dict:
    """Environment for both sides: shm = the large-frame profile above; localhost = what the tests use
    (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST); default = Fast DDS defaults."""
    if kind == "shm":
        xml = Path(tmp) / "fastdds_large_frames.xml"
        xml.write_text(FASTDDS_LARGE_FRAMES_XML)
        return {"FASTDDS_DEFAULT_PROFILES_FILE": str(xml), "ROS_AUTOMATIC_DISCOVERY_RANGE": None}
    if kind == "localhost":
        return {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "FASTDDS_DEFAULT_PROFILES_FILE": None}
    if kind == "default":
        return {"ROS_AUTOMATIC_DISCOVERY_RANGE": None, "FASTDDS_DEFAULT_PROFILES_FILE": None}
    raise ValueError(f"transport must be one of {TRANSPORTS}")


def _apply_env(changes: dict) -> None:
    """Set the transport for this process (before its first rclpy context) and for the node it spawns."""
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    for k, v in changes.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _domain() -> int:
    return 1 + (os.getpid() * 17 + int(time.time())) % 200


def _spawn(params: dict, domain: int, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1")  # transport: see _apply_env
    cmd = [sys.executable, "-m", "flare_policy.node", "--ros-args"]
    for k, v in params.items():
        v = ("true" if v else "false") if isinstance(v, bool) else v
        cmd += ["-p", f"{k}:={v}"]
    log = open(log_path, "wb")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(2)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def tiny_bundle(out: Path, cameras=(NAV,), embodiment: str = "sim", seed: int = 0) -> Path:
    """Random tiny CNN bundle; with two cameras it is a Stretch bundle of 56x56 crops (cheap model, real I/O)."""
    import torch

    from .bundle import save_bundle, sim_camera
    from .embodiments import get_embodiment
    from .model import PolicyNet, tiny

    torch.manual_seed(seed)
    n = len(get_embodiment(embodiment).actions)
    model = PolicyNet(tiny(n_actions=n, cameras=tuple(cameras)))
    return save_bundle(out, model, embodiment=embodiment, cameras=[sim_camera(c) for c in cameras],
                       text_encoder={"kind": "minilm"}, provenance={"note": "random weights (benchmark)"})


def small3_bundle(out: Path, seed: int = 0) -> Path:
    """Random flare_small3 Stretch bundle with a random DINOv2-S/14 and a random T5-small (FLaRe's shapes)."""
    import torch

    from .bundle import flare_camera, save_bundle
    from .convert import random_t5
    from .model import PolicyNet, flare_small3
    from .vision import random_dinov2

    out = Path(out)
    dino = random_dinov2(out.parent / "dinov2", seed=seed)
    t5 = out.parent / "t5"
    random_t5(t5, seed=seed)
    torch.manual_seed(seed)
    model = PolicyNet(flare_small3())
    return save_bundle(out, model, embodiment="stretch", cameras=[flare_camera(c) for c in model.cfg.cameras],
                       text_encoder={"kind": "t5", "path": str(t5)},
                       vision_encoder={"kind": "dinov2", "path": str(dino)},
                       provenance={"note": "random weights (benchmark)"})


class FakeRobot:
    """Cameras + an instant executor on a private rclpy context in this process."""

    def __init__(self, domain: int, cameras: dict[str, str], size: tuple[int, int], instant: bool = True,
                 retry_s: float = 0.0, frames_after_result: bool = True):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import Bool, String

        from .protocol import CommandResult

        self.rclpy, self.Image, self.String, self.CommandResult = rclpy, Image, String, CommandResult
        self.ctx = Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = Node("fake_robot", context=self.ctx)
        sensor = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=1)
        rel = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=100)
        latched = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.cam_pubs = {c: self.node.create_publisher(Image, t, sensor) for c, t in cameras.items()}
        self.result_pub = self.node.create_publisher(String, "/flare/command_result", rel)
        self.ready_pub = self.node.create_publisher(Bool, "/flare/robot_ready", latched)
        self.goal_pub = self.node.create_publisher(String, "/flare/goal", QoSProfile(
            reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1))
        self.instant = instant
        self.frames_after_result = frames_after_result
        self.lock = threading.Lock()
        self.cmd_recv: dict[int, float] = {}  # id -> perf_counter at callback
        self.frames_sent: dict[int, float] = {}  # id -> perf_counter after the frames following its result
        self.status: dict[int, dict] = {}
        self.diag: dict[str, dict] = {}
        self.published = {c: 0 for c in cameras}
        w, h = size
        rng = np.random.default_rng(0)
        self._base = rng.integers(0, 256, (h, w * 3), dtype=np.uint8)
        self._shift = 0
        self.size = size
        self.node.create_subscription(String, "/flare/command", self._on_command, rel)
        self.node.create_subscription(String, "/flare/status", self._on_status, rel)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.ready_pub.publish(Bool(data=True))
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        self._pump = None
        self.retried: set[int] = set()  # answered commands whose frames had to be re-sent (excluded)
        self.episodes_restarted = 0
        self._last_answer: tuple[int, float] | None = None
        if retry_s > 0:
            threading.Thread(target=self._watchdog, args=(retry_s,), daemon=True).start()

    def _watchdog(self, retry_s: float):
        """Best-effort frames can be lost: if the next command does not come, send frames again."""
        while not self._stop.wait(retry_s / 4):
            with self.lock:
                la = self._last_answer
                waiting = la is not None and (la[0] + 1) not in self.cmd_recv
            if waiting and time.perf_counter() - la[1] > retry_s:
                with self.lock:
                    self.retried.add(la[0])
                    self._last_answer = (la[0], time.perf_counter())
                self.publish_frames()

    def _spin(self):
        while self.ctx.ok() and not self._stop.is_set():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutting down
                break

    def frame_msg(self, stamp: float):
        m = self.Image()
        m.header.stamp.sec, m.header.stamp.nanosec = int(stamp), int((stamp % 1) * 1e9)
        m.header.frame_id = "camera"
        m.height, m.width = self.size[1], self.size[0]
        m.encoding, m.step = "rgb8", self.size[0] * 3
        self._shift = (self._shift + 3) % (self.size[0] * 3)
        m.data = np.roll(self._base, self._shift, axis=1).tobytes()
        return m

    def publish_frames(self, cams=None, after: float = 0.0):
        for c in cams or self.cam_pubs:
            self.cam_pubs[c].publish(self.frame_msg(max(time.time(), after + 1e-6)))
            self.published[c] += 1

    def _on_command(self, msg):
        t = time.perf_counter()
        cmd = json.loads(msg.data)
        if cmd["action"] == "stop":
            return
        with self.lock:
            self.cmd_recv[cmd["id"]] = t
        if not self.instant:
            return
        res = self.CommandResult(cmd["id"], cmd["action"], True, False, time.time(), "")
        self.result_pub.publish(self.String(data=res.to_json()))
        if not self.frames_after_result:  # cameras run on their own clock (soak)
            return
        self.publish_frames(after=res.stamp)
        with self.lock:
            self.frames_sent[cmd["id"]] = t_sent = time.perf_counter()
            self._last_answer = (cmd["id"], t_sent)

    def _on_status(self, msg):
        st = json.loads(msg.data)
        if st.get("command_id") is not None and "latency_ms" in st:
            with self.lock:
                self.status[st["command_id"]] = st
        if st.get("state") == "finished" and not self._stop.is_set():
            # a random policy may choose `end`: keep the benchmark going with a new episode
            with self.lock:
                self.episodes_restarted += 1
            self.goal_pub.publish(self.String(data=GOAL))
            threading.Timer(0.2, self.publish_frames).start()

    def _on_diag(self, msg):
        for s in msg.status:
            with self.lock:
                self.diag[s.name] = {kv.key: kv.value for kv in s.values}

    def start(self, timeout=120.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.goal_pub.get_subscription_count() > 0 and all(
                    p.get_subscription_count() > 0 for p in self.cam_pubs.values()):
                self.goal_pub.publish(self.String(data=GOAL))
                time.sleep(0.2)
                self.publish_frames()
                return True
            time.sleep(0.05)
        return False

    def start_pump(self, rate: float):
        def run():
            period = 1.0 / rate
            nxt = time.perf_counter()
            while not self._stop.is_set():
                self.publish_frames()
                nxt += period
                time.sleep(max(0.0, nxt - time.perf_counter()))
        self._pump = threading.Thread(target=run, daemon=True)
        self._pump.start()

    def steps(self) -> list[dict]:
        """Per answered command k: round trip to command k+1 and that command's status."""
        out = []
        with self.lock:
            for cid, t_sent in sorted(self.frames_sent.items()):
                if cid in self.retried:
                    continue
                nxt = cid + 1
                if nxt in self.cmd_recv and nxt in self.status and self.status[nxt].get("decision_step", 0) > 0:
                    out.append({"id": nxt, "round_trip_ms": (self.cmd_recv[nxt] - t_sent) * 1e3,
                                **self.status[nxt]})
        return out

    def n_commands(self) -> int:
        with self.lock:
            return len(self.cmd_recv)

    def close(self):
        self._stop.set()
        if self._pump is not None:
            self._pump.join(2.0)
        self.thread.join(2.0)
        try:
            self.executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
        finally:
            if self.ctx.ok():
                self.rclpy.shutdown(context=self.ctx)


def _run_steps(bundle: Path, cameras: dict, size, n_steps: int, warmup: int, params: dict, log: Path,
               timeout: float, retry_s: float = 0.0) -> tuple[list[dict], dict]:
    domain = _domain()
    p = {"bundle": str(bundle), "log_steps": False, "max_steps": 1_000_000, "frame_timeout_s": 60.0,
         "command_timeout_s": 60.0, "max_frame_age_s": 5.0}
    p.update(params)
    proc = _spawn(p, domain, log)
    robot = FakeRobot(domain, cameras, size, retry_s=retry_s)
    info = {"domain": domain}
    try:
        t0 = time.monotonic()
        if not robot.start(timeout=120):
            raise RuntimeError(f"policy_node did not come up (log: {log})")
        info["startup_s"] = round(time.monotonic() - t0, 2)
        end = time.monotonic() + timeout
        while robot.n_commands() < n_steps + warmup + 1 and time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"policy_node exited with {proc.returncode} (log: {log})")
            time.sleep(0.05)
        info["rss_mb"] = round(_rss_mb(proc.pid), 1)
        info["frames_resent"] = len(robot.retried)
        info["episodes_restarted"] = robot.episodes_restarted
    finally:
        robot.close()
        info["exit_status"] = _stop(proc)
    steps = [s for s in robot.steps() if s["decision_step"] >= warmup][:n_steps]
    return steps, info


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# ------------------------------------------------------------------------------------------------ node
def node(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="flare-policy bench node", description="Node overhead per step excluding "
                                 "the model (target <= 5 ms), with an instant fake executor in this process.")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--size", default="56x56", help="camera frame WxH (default 56x56, the simulator's)")
    ap.add_argument("--bundle", help="bundle to run (default: a random tiny sim bundle)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--target-ms", type=float, default=5.0)
    ap.add_argument("--transport", choices=TRANSPORTS, default="localhost",
                    help="DDS setup (default localhost, as in the tests; frames are small)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    size = tuple(int(x) for x in a.size.lower().split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="flare-bench-node-"))
    _apply_env(transport_env(a.transport, tmp))
    bundle = Path(a.bundle) if a.bundle else tiny_bundle(tmp / "bundle")
    steps, info = _run_steps(bundle, {NAV: TOPICS[NAV]}, size, a.steps, a.warmup, {"threads": a.threads},
                             tmp / "policy_node.log", timeout=max(60.0, a.steps * 0.5), retry_s=1.0)
    rt = [s["round_trip_ms"] for s in steps]
    model = [s["latency_ms"] for s in steps]
    ext = [s["round_trip_ms"] - s["latency_ms"] for s in steps]
    internal = [s["overhead_ms"] for s in steps]
    r = {"bench": "node", "steps": len(steps), "frame": a.size, "threads": a.threads,
         "round_trip_ms": _stats(rt), "model_ms": _stats(model), "overhead_external_ms": _stats(ext),
         "overhead_internal_ms": _stats(internal), "target_ms": a.target_ms, "loadavg": _load(), **info}
    r["pass"] = bool(steps) and r["overhead_external_ms"]["p50"] <= a.target_ms
    print(f"policy_node with an instant executor, {len(steps)} steps, {a.size} frames, {a.threads} torch thread(s), "
          f"load average {r['loadavg']}")
    print(f"  frames sent -> command received : {_fmt(r['round_trip_ms'])} ms")
    print(f"  model (PolicyRunner.act)         : {_fmt(r['model_ms'])} ms")
    print(f"  overhead, outside view           : {_fmt(r['overhead_external_ms'])} ms  (round trip - model)")
    print(f"  overhead, node's own view        : {_fmt(r['overhead_internal_ms'])} ms  (callback -> publish - model)")
    print(f"  target p50 <= {a.target_ms} ms: {'PASS' if r['pass'] else 'MISS'}")
    if a.json:
        print(json.dumps(r))
    return 0 if steps else 1


# ------------------------------------------------------------------------------------------------ latency
def latency(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="flare-policy bench latency", description="Frame -> command latency of "
                                 "policy_node for tiny (sim) and flare_small3 (random DINOv2 + T5, 2 cameras).")
    ap.add_argument("--models", default="tiny,flare_small3")
    ap.add_argument("--steps", type=int, default=0, help="steps per model (default: tiny 200, flare_small3 20)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--size", default="640x480", help="flare_small3 camera frames WxH (default 640x480)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the node (default 2)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--vision-quantize", action="store_true", help="node parameter vision_quantize:=true")
    ap.add_argument("--transport", choices=TRANSPORTS, default="shm",
                    help="DDS setup (default shm: the large-frame Fast DDS profile, see FASTDDS_LARGE_FRAMES_XML)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="flare-bench-latency-"))
    _apply_env(transport_env(a.transport, tmp))
    results = {}
    for name in [m.strip() for m in a.models.split(",") if m.strip()]:
        if name == "tiny":
            bundle, cams, size = tiny_bundle(tmp / "tiny" / "bundle"), {NAV: TOPICS[NAV]}, (56, 56)
            n = a.steps or 200
        elif name == "flare_small3":
            bundle, cams = small3_bundle(tmp / "small3" / "bundle"), dict(TOPICS)
            size = tuple(int(x) for x in a.size.lower().split("x"))
            n = a.steps or 20
        else:
            print(f"unknown model {name!r} (tiny, flare_small3)", file=sys.stderr)
            return 2
        node_params = {"threads": a.threads, "device": a.device}
        if name == "flare_small3" and a.vision_quantize:
            node_params["vision_quantize"] = True
        steps, info = _run_steps(bundle, cams, size, n, a.warmup, node_params,
                                 tmp / f"{name}.log", timeout=max(120.0, n * 10.0),
                                 retry_s=1.0 if name == "tiny" else 5.0)
        results[name] = {"steps": len(steps), "frame": f"{size[0]}x{size[1]}", "cameras": len(cams),
                         "frame_to_command_ms": _stats([s["round_trip_ms"] for s in steps]),
                         "model_ms": _stats([s["latency_ms"] for s in steps]),
                         "overhead_ms": _stats([s["round_trip_ms"] - s["latency_ms"] for s in steps]), **info}
    r = {"bench": "latency", "threads": a.threads, "device": a.device, "vision_quantize": a.vision_quantize,
         "transport": a.transport, "loadavg": _load(), "models": results}
    print(f"policy_node frame -> command latency ({a.threads} torch threads, {a.device}"
          f"{', int8 DINOv2' if a.vision_quantize else ''}, load {r['loadavg']})")
    for name, m in results.items():
        print(f"  {name:<13} {m['cameras']} x {m['frame']}, {m['steps']} steps, RSS {m.get('rss_mb')} MB, "
              f"startup {m.get('startup_s')} s, frames re-sent {m.get('frames_resent')}")
        print(f"    frame -> command : {_fmt(m['frame_to_command_ms'])} ms")
        print(f"    model            : {_fmt(m['model_ms'])} ms")
        print(f"    rest             : {_fmt(m['overhead_ms'])} ms")
    if a.json:
        print(json.dumps(r))
    return 0 if all(m["steps"] for m in results.values()) else 1


# ------------------------------------------------------------------------------------------------ soak
def soak(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="flare-policy bench soak", description="2 cameras at 30 Hz while the "
                                 "policy steps: drops, frame age at decision, latency and RSS over time.")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--interval", type=float, default=10.0, help="report period (s)")
    ap.add_argument("--rate", type=float, default=30.0, help="per-camera frame rate (Hz)")
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--model", default="tiny", choices=("tiny", "flare_small3"),
                    help="tiny: cheap 2-camera Stretch bundle (56x56 crops); flare_small3: the real model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--kv-window", type=int, default=1000)
    ap.add_argument("--transport", choices=TRANSPORTS, default="shm",
                    help="DDS setup (default shm: the large-frame Fast DDS profile; `default` shows the drops)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    size = tuple(int(x) for x in a.size.lower().split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="flare-bench-soak-"))
    _apply_env(transport_env(a.transport, tmp))
    if a.model == "tiny":
        bundle = tiny_bundle(tmp / "bundle", cameras=(NAV, MANIP), embodiment="stretch")
    else:
        bundle = small3_bundle(tmp / "bundle")
    domain = _domain()
    log = tmp / "policy_node.log"
    proc = _spawn({"bundle": str(bundle), "log_steps": False, "max_steps": 1_000_000, "threads": a.threads,
                   "device": a.device, "kv_window": a.kv_window, "max_frame_age_s": 0.5}, domain, log)
    robot = FakeRobot(domain, dict(TOPICS), size, frames_after_result=False)
    windows = []
    try:
        if not robot.start(timeout=180):
            print(f"policy_node did not come up (log: {log})", file=sys.stderr)
            return 1
        robot.start_pump(a.rate)
        t0 = time.monotonic()
        last_pub = dict(robot.published)
        last_cmds, last_t = robot.n_commands(), t0
        last_recv = {}
        print(f"soak: 2 cameras x {a.rate:.0f} Hz x {a.size} rgb8 ({2 * a.rate * size[0] * size[1] * 3 / 1e6:.1f} "
              f"MB/s), model {a.model}, {a.seconds:.0f} s, load {_load()}")
        print(f"{'t s':>5} {'RSS MB':>7} {'steps/s':>7} {'nav rx/tx':>10} {'man rx/tx':>10} {'nav Hz':>6} "
              f"{'age@dec p95':>11} {'step ms p50':>11} {'p95':>6} {'model p50':>9}")
        while time.monotonic() - t0 < a.seconds:
            time.sleep(a.interval)
            if proc.poll() is not None:
                print(f"policy_node exited with {proc.returncode} (log: {log})", file=sys.stderr)
                return 1
            now = time.monotonic()
            with robot.lock:
                diag = {k: dict(v) for k, v in robot.diag.items()}
                sts = [s for s in robot.status.values() if s.get("stamp", 0) >= time.time() - (now - last_t)]
            with robot.lock:
                recv = sorted(t for t in robot.cmd_recv.values() if t >= time.perf_counter() - (now - last_t))
            steps = [{"round_trip_ms": (b - a) * 1e3} for a, b in zip(recv, recv[1:])]
            pub = dict(robot.published)
            w = {"t": round(now - t0, 1), "rss_mb": round(_rss_mb(proc.pid), 1),
                 "steps_per_s": round((robot.n_commands() - last_cmds) / (now - last_t), 2),
                 "frame_age_at_decision_ms": _stats([s["frame_age_ms"] for s in sts]),
                 "step_period_ms": _stats([s["round_trip_ms"] for s in steps]),
                 "model_ms": _stats([s["latency_ms"] for s in sts])}
            for cam in (NAV, MANIP):
                d = diag.get(f"policy_node: camera {cam}", {})
                recv = int(d.get("received", 0))
                sent = pub[cam] - last_pub[cam]
                got = recv - last_recv.get(cam, 0)
                w[cam] = {"sent": sent, "received": got, "rate_hz": float(d.get("rate_hz", "nan")),
                          "invalid": int(d.get("invalid", 0)), "frame_age_s": float(d.get("frame_age_s", "nan"))}
                last_recv[cam] = recv
            windows.append(w)
            fa, rt = w["frame_age_at_decision_ms"], w["step_period_ms"]
            print(f"{w['t']:>5.0f} {w['rss_mb']:>7.1f} {w['steps_per_s']:>7.1f} "
                  f"{w[NAV]['received']:>4}/{w[NAV]['sent']:<5} {w[MANIP]['received']:>4}/{w[MANIP]['sent']:<5} "
                  f"{w[NAV]['rate_hz']:>6.1f} {fa.get('p95', float('nan')):>11.1f} "
                  f"{rt.get('p50', float('nan')):>11.1f} {rt.get('p95', float('nan')):>6.1f} "
                  f"{w['model_ms'].get('p50', float('nan')):>9.1f}")
            last_pub, last_cmds, last_t = pub, robot.n_commands(), now
    finally:
        robot.close()
        rc = _stop(proc)
    rss = [w["rss_mb"] for w in windows]
    growth = (rss[-1] - rss[min(1, len(rss) - 1)]) if len(rss) > 1 else 0.0
    span_min = (windows[-1]["t"] - windows[min(1, len(windows) - 1)]["t"]) / 60 if len(windows) > 1 else 0
    r = {"bench": "soak", "seconds": a.seconds, "rate_hz": a.rate, "frame": a.size, "model": a.model,
         "windows": windows, "rss_first_mb": rss[0] if rss else None, "rss_last_mb": rss[-1] if rss else None,
         "rss_growth_mb_per_min": round(growth / span_min, 2) if span_min else None,
         "exit_status": rc, "loadavg": _load()}
    print(f"RSS {r['rss_first_mb']} -> {r['rss_last_mb']} MB (after the first window: "
          f"{r['rss_growth_mb_per_min']} MB/min); node exit status {rc}")
    if a.json:
        print(json.dumps(r))
    return 0 if rc == 0 and windows else 1


BENCHES = {
    "node": (node, "policy_node overhead per step excluding the model (target <= 5 ms)"),
    "latency": (latency, "policy_node frame -> command latency, tiny and flare_small3"),
    "soak": (soak, "2 x 30 Hz cameras for N s: drops, frame age, latency, RSS"),
}
