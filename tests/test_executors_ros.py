"""Executor nodes over real rclpy: each test starts the node in its own process and private ROS domain, and
talks to it from the test process (its own rclpy context on that domain).

* stretch_executor (backend fake): results, in-hand, stamps, malformed commands ignored, no queued motion, stop,
  runstop / paused modes, SIGTERM -> driver.stop().
* locobot_executor (backend ros): real Twist publishing closed on odometry from a simulated Create 3 in the test.
* stretch_executor with the stretch_driver backend: the test plays stretch_driver (joint states, /joint_limits,
  /mode, /is_runstopped, services); only the FollowJointTrajectory transport (control_msgs is not on PyPI) is
  replaced, at the backend's trajectory-client seam, by a topic carrying the same JointTrajectory goals.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import threading
import time

import pytest

# keep every test-side ROS participant on loopback, like the node processes (rosproc.ros_env)
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

rclpy = pytest.importorskip("rclpy")

from flare_bringup.rosproc import NodeProcess, ros_args, ros_env, unique_domain_id  # noqa: E402

pytestmark = pytest.mark.ros
DEG = math.pi / 180


def _exe(name: str) -> list[str]:
    exe = shutil.which(name, path=os.path.dirname(sys.executable))
    if exe:
        return [exe]
    mod, fn = {"stretch_executor": ("flare_bringup.executor_node", "stretch_main"),
               "locobot_executor": ("flare_bringup.executor_node", "locobot_main")}[name]
    return [sys.executable, "-c", f"import {mod} as m; m.{fn}()"]


class Client:
    """Test-side node on its own context: command/result/ready plus whatever a test adds."""

    def __init__(self, domain: int, name: str = "exec_test_client"):
        from rclpy.context import Context
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from std_msgs.msg import Bool, String

        self.ctx = Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = Node(name, context=self.ctx)
        self.String, self.Bool = String, Bool
        self.lock = threading.Lock()
        self.results: list[tuple[float, dict]] = []
        self.ready: list[tuple[float, bool]] = []
        self.cmd_pub = self.node.create_publisher(String, "/flare/command", 10)
        self.node.create_subscription(String, "/flare/command_result", self._on_result, 50)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(Bool, "/flare/robot_ready", self._on_ready, latched)
        self.ex = MultiThreadedExecutor(num_threads=2, context=self.ctx)
        self.ex.add_node(self.node)
        self._t = threading.Thread(target=self._spin, daemon=True)
        self._t.start()
        self._id = 0

    def _spin(self):
        while self.ctx.ok():
            try:
                self.ex.spin_once(timeout_sec=0.05)
            except Exception:
                break

    def _on_result(self, msg):
        with self.lock:
            self.results.append((time.time(), json.loads(msg.data)))

    def _on_ready(self, msg):
        with self.lock:
            self.ready.append((time.time(), bool(msg.data)))

    def send(self, action: str, cid: int | None = None, episode: int = 1) -> int:
        if cid is None:
            self._id += 1
            cid = self._id
        self.cmd_pub.publish(self.String(data=json.dumps({"id": cid, "action": action, "episode": episode})))
        return cid

    def send_raw(self, text: str):
        self.cmd_pub.publish(self.String(data=text))

    def wait(self, pred, timeout=10.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                v = pred()
            if v:
                return v
            time.sleep(0.01)
        with self.lock:
            return pred()

    def result(self, cid: int, timeout=10.0) -> dict | None:
        got = self.wait(lambda: [r for _, r in self.results if r["id"] == cid], timeout)
        return got[0] if got else None

    def result_time(self, cid: int) -> float | None:
        with self.lock:
            for t, r in self.results:
                if r["id"] == cid:
                    return t
        return None

    def is_ready(self) -> bool | None:
        return self.ready[-1][1] if self.ready else None

    def wait_ready(self, value: bool, timeout=15.0) -> bool:
        return bool(self.wait(lambda: self.ready and self.ready[-1][1] is value, timeout))

    def close(self):
        try:
            self.ex.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
        finally:
            if self.ctx.ok():
                rclpy.shutdown(context=self.ctx)
        self._t.join(2.0)


@pytest.fixture
def domain():
    return unique_domain_id()


# ------------------------------------------------------------------------------------------ stretch (fake)
def test_stretch_executor_protocol_runstop_stop_and_sigterm(domain, tmp_path):
    params = {"backend": "fake", "fake_motion_time_s": 0.8, "fake_object_width_m": 0.03,
              "runstop_topic": "/is_runstopped", "mode_topic": "/mode", "runstop_timeout_s": 0.0}
    c = Client(domain)
    proc = NodeProcess("stretch_executor", _exe("stretch_executor") + ros_args(params), ros_env(domain), tmp_path)
    runstop_pub = c.node.create_publisher(c.Bool, "/is_runstopped", 10)
    mode_pub = c.node.create_publisher(c.String, "/mode", 10)
    try:
        assert c.wait_ready(True), proc.output()
        assert c.wait(lambda: c.cmd_pub.get_subscription_count() > 0, 10)

        # malformed commands are logged and ignored: no result, node alive
        for bad in ("not json", '{"id": "x", "action": "move_ahead"}', "[1, 2]", '{"id": 1}'):
            c.send_raw(bad)
        time.sleep(0.5)
        assert c.results == [] and proc.alive()

        # one command at a time: a second command while busy is refused, never queued
        t0 = time.time()
        a = c.send("move_ahead")
        b = c.send("rotate_left")
        rb = c.result(b, 5)
        assert rb and rb["success"] is False and "busy" in rb["message"], rb
        ra = c.result(a, 5)
        assert ra and ra["success"] is True and ra["in_hand"] is False, ra
        assert t0 + 0.75 <= ra["stamp"] <= time.time() + 0.05  # stamped by the node clock at completion
        assert c.result_time(b) < c.result_time(a)

        # heuristic grasp feeds in_hand; dropoff clears it; end never moves
        r = c.result(c.send("pickup"), 5)
        assert r["success"] and r["in_hand"], r
        r = c.result(c.send("end"), 5)
        assert r["success"] and r["in_hand"] and "no motion" in r["message"], r
        r = c.result(c.send("dropoff"), 5)
        assert r["success"] and not r["in_hand"], r
        r = c.result(c.send("fly_away"), 5)
        assert not r["success"] and "unknown action" in r["message"]

        # a retransmitted (same id) finished command is answered from cache, not executed again
        n_before = proc.output().count("fake driver: translate_base")
        c.send("move_ahead", cid=a)
        time.sleep(0.6)
        assert proc.output().count("fake driver: translate_base") == n_before

        # stop halts the running motion at once
        s = c.send("move_ahead")
        time.sleep(0.1)
        t_stop = time.time()
        c.send_raw(json.dumps({"id": 999, "action": "stop", "episode": 1}))
        r = c.result(s, 5)
        assert r and not r["success"] and "interrupted: stop command" in r["message"], (r, proc.output())
        assert c.result_time(s) - t_stop < 0.6  # well before the 0.8 s motion would end
        assert c.result(999, 0.3) is None  # stop is never acknowledged as a motion

        # runstop: readiness false, commands refused; release resumes
        runstop_pub.publish(c.Bool(data=True))
        assert c.wait_ready(False, 5)
        r = c.result(c.send("move_back"), 5)
        assert not r["success"] and "not ready" in r["message"] and "runstop" in r["message"], r
        runstop_pub.publish(c.Bool(data=False))
        assert c.wait_ready(True, 5)
        assert c.result(c.send("move_back"), 5)["success"]

        # runstop during a motion halts it
        m = c.send("rotate_right")
        time.sleep(0.1)
        runstop_pub.publish(c.Bool(data=True))
        r = c.result(m, 5)
        assert not r["success"] and "interrupted" in r["message"] and "runstop" in r["message"], r
        runstop_pub.publish(c.Bool(data=False))
        assert c.wait_ready(True, 5)

        # driver modes homing/stowing/runstopped pause too
        mode_pub.publish(c.String(data="homing"))
        assert c.wait_ready(False, 5)
        mode_pub.publish(c.String(data="position"))
        assert c.wait_ready(True, 5)

        # SIGTERM: the motion is halted, driver.stop() called, readiness false, clean exit
        m = c.send("move_ahead")
        time.sleep(0.1)
        proc.send(signal.SIGTERM)
        assert proc.wait(10) == 0, proc.output()
        assert c.wait_ready(False, 5)
    finally:
        proc.stop()
        c.close()
    out = proc.output()
    assert "SIGTERM received" in out and out.rstrip().count("fake driver: stop()") >= 1
    tail = out[out.index("SIGTERM received"):]
    assert "fake driver: stop()" in tail and "fake driver: close()" in tail
    assert "ignoring malformed command" in out


# ------------------------------------------------------------------------------------------ locobot (ros)
class FakeCreate3:
    """Simulated Create 3 base in the test process: integrates the last Twist (0.5 s hold), publishes odometry."""

    def __init__(self, client: Client, cmd_topic="/locobot/mobile_base/cmd_vel",
                 odom_topic="/locobot/mobile_base/odom"):
        from geometry_msgs.msg import Twist
        from nav_msgs.msg import Odometry

        self.c = client
        self.Odometry = Odometry
        self.pose = [0.0, 0.0, 0.0]
        self.cmd, self.cmd_t = (0.0, 0.0), -1.0
        self.twists: list[tuple[float, float, float]] = []
        self.last = time.monotonic()
        self.pub = client.node.create_publisher(Odometry, odom_topic, 10)
        client.node.create_subscription(Twist, cmd_topic, self._on_twist, 50)
        client.node.create_timer(0.02, self._tick)
        self.lock = threading.Lock()

    def _on_twist(self, m):
        with self.lock:
            self._integrate()
            self.cmd, self.cmd_t = (m.linear.x, m.angular.z), time.monotonic()
            self.twists.append((time.monotonic(), m.linear.x, m.angular.z))

    def _integrate(self):
        now = time.monotonic()
        dt, self.last = now - self.last, now
        if now - self.cmd_t > 0.5:
            return
        vx, wz = self.cmd
        self.pose[2] += wz * dt
        self.pose[0] += vx * dt * math.cos(self.pose[2])
        self.pose[1] += vx * dt * math.sin(self.pose[2])

    def _tick(self):
        with self.lock:
            self._integrate()
            o = self.Odometry()
            o.header.frame_id, o.child_frame_id = "odom", "base_link"
            o.pose.pose.position.x, o.pose.pose.position.y = self.pose[0], self.pose[1]
            o.pose.pose.orientation.z = math.sin(self.pose[2] / 2)
            o.pose.pose.orientation.w = math.cos(self.pose[2] / 2)
        self.pub.publish(o)


def test_locobot_executor_drives_by_odometry_and_refuses_masked_actions(domain, tmp_path):
    c = Client(domain)
    base = FakeCreate3(c)
    # The fake base publishes odometry from this test process, whose executor thread can stall for over the
    # default 0.5 s odom_timeout_s on a loaded CI machine; stale odometry stopping a motion is tested in
    # test_executors.py::test_locobot_stale_odometry_stops_the_motion.
    params = {"backend": "ros", "tilt_interface": "fake", "odom_timeout_s": 2.0}
    proc = NodeProcess("locobot_executor", _exe("locobot_executor") + ros_args(params), ros_env(domain), tmp_path)
    try:
        assert c.wait_ready(True), proc.output()
        assert c.wait(lambda: c.cmd_pub.get_subscription_count() > 0, 10)
        r = c.result(c.send("move_ahead"), 10)
        assert r and r["success"], (r, proc.output())
        with base.lock:
            x, y = base.pose[0], base.pose[1]
            moving = [t for t, vx, wz in base.twists if vx]
        assert x == pytest.approx(0.25, abs=0.02) and abs(y) < 0.01
        assert len(moving) >= 10 and (moving[-1] - moving[0]) / (len(moving) - 1) <= 0.1  # >= 10 Hz
        # the closing zero Twist and the result travel on different topics: either may arrive first
        assert c.wait(lambda: base.twists[-1][1:] == (0.0, 0.0), 2.0), base.twists[-3:]
        r = c.result(c.send("move_back"), 5)
        assert not r["success"] and "masked" in r["message"]
        r = c.result(c.send("pickup"), 5)
        assert not r["success"] and "masked" in r["message"]
        r = c.result(c.send("rotate_right"), 10)
        assert r and r["success"], (r, proc.output())
        with base.lock:
            # the fake base integrates the last Twist in wall time, so a runner that stalls the executor
            # process for a few 100 ms adds overshoot a real base would not see; the sign and the odometry-
            # bounded ~30 degrees are what this checks (the distance above is checked at 2 cm)
            assert base.pose[2] == pytest.approx(-30 * DEG, abs=8 * DEG)
        r = c.result(c.send("rotate_left_small"), 5)
        assert r["success"] and "look_up" in r["message"], r
        n = len(base.twists)
        proc.send(signal.SIGINT)
        assert proc.wait(10) == 0, proc.output()
        time.sleep(0.2)
        with base.lock:
            assert len(base.twists) > n and base.twists[-1][1:] == (0.0, 0.0)  # zero Twist on shutdown
    finally:
        proc.stop()
        c.close()


# ------------------------------------------------------------------------------- stretch (driver backend)
JOINT_NAMES = ["wrist_extension", "joint_lift", "joint_arm_l3", "joint_arm_l2", "joint_arm_l1", "joint_arm_l0",
               "joint_head_pan", "joint_head_tilt", "joint_wrist_yaw", "joint_gripper_finger_left",
               "joint_gripper_finger_right"]
FINGER_LEN = 0.9 * 0.19011


class FakeStretchDriverNode:
    """Plays hello-robot stretch_driver's ROS interface in the test process (no hardware exists here)."""

    def __init__(self, client: Client, mode="navigation", object_width_m=0.03, homed=True,
                 get_joint_states=True, tool="tool_stretch_gripper", battery_v=12.4):
        from sensor_msgs.msg import BatteryState, JointState
        from std_srvs.srv import Trigger
        from trajectory_msgs.msg import JointTrajectory

        n = client.node
        self.c, self.JointState = client, JointState
        self.state = {"wrist_extension": 0.2, "joint_lift": 1.02, "joint_head_pan": 0.0, "joint_head_tilt": -0.5,
                      "joint_wrist_yaw": 0.5, "finger": 0.1}
        self.mode = mode
        self.object_width = object_width_m
        self.homed, self.tool, self.battery_v = homed, tool, battery_v
        self.effort = 0.0  # gripper finger effort (Robotis %), as stretch_driver puts it in joint_states
        self.BatteryState = BatteryState
        self.goals: list[tuple[float, list, list]] = []
        self.calls: list[str] = []
        self.cancels = 0
        self.lock = threading.Lock()
        self.js_pub = n.create_publisher(JointState, "/stretch/joint_states", 1)
        self.lim_pub = n.create_publisher(JointState, "/joint_limits", 1)
        self.mode_pub = n.create_publisher(client.String, "/mode", 1)
        self.stop_pub = n.create_publisher(client.Bool, "/is_runstopped", 1)
        self.homed_pub = n.create_publisher(client.Bool, "/is_homed", 1)
        self.tool_pub = n.create_publisher(client.String, "/tool", 1)
        self.battery_pub = n.create_publisher(BatteryState, "/battery", 1)
        self.res_pub = n.create_publisher(client.String, "/fake_driver/result", 10)
        n.create_subscription(JointTrajectory, "/fake_driver/goal", self._on_goal, 10)
        n.create_subscription(client.String, "/fake_driver/cancel", self._on_cancel, 10)
        if get_joint_states:  # stretch_driver since 2024-02-29 only
            n.create_service(Trigger, "/get_joint_states", self._srv("get_joint_states", self._publish_limits))
        n.create_service(Trigger, "/home_the_robot", self._srv("home_the_robot", lambda: setattr(self, "homed", True)))
        n.create_service(Trigger, "/stop_the_robot", self._srv("stop_the_robot"))
        n.create_service(Trigger, "/switch_to_position_mode", self._srv("switch_to_position_mode",
                                                                         lambda: setattr(self, "mode", "position")))
        n.create_timer(1 / 30, self._tick)

    def _srv(self, name, fn=None):
        def cb(req, resp):
            self.calls.append(name)
            if fn:
                fn()
            resp.success = True
            return resp
        return cb

    def _publish_limits(self):
        m = self.JointState()
        m.name = ["joint_lift", "wrist_extension", "joint_wrist_yaw", "joint_gripper_finger_left"]
        m.position = [0.0, 0.0, -1.75, -0.6]   # lower
        m.velocity = [1.08, 0.5, 4.0, 0.6]     # upper
        self.lim_pub.publish(m)

    def _tick(self):
        with self.lock:
            s = dict(self.state)
        m = self.JointState()
        m.header.stamp = self.c.node.get_clock().now().to_msg()
        m.name = JOINT_NAMES
        arm = s["wrist_extension"]
        m.position = [arm, s["joint_lift"], arm / 4, arm / 4, arm / 4, arm / 4, s["joint_head_pan"],
                      s["joint_head_tilt"], s["joint_wrist_yaw"], s["finger"], s["finger"]]
        m.effort = [0.0] * 9 + [self.effort, self.effort]
        self.js_pub.publish(m)
        self.mode_pub.publish(self.c.String(data=self.mode))
        self.stop_pub.publish(self.c.Bool(data=False))
        self.homed_pub.publish(self.c.Bool(data=self.homed))
        self.tool_pub.publish(self.c.String(data=self.tool))
        b = self.BatteryState()
        b.voltage = self.battery_v
        b.percentage = float("nan")  # stretch_driver does not know the charge
        self.battery_pub.publish(b)

    def _on_cancel(self, _msg):
        self.cancels += 1

    def _on_goal(self, traj):
        names, pos = list(traj.joint_names), list(traj.points[0].positions)
        seq = traj.header.frame_id
        with self.lock:
            self.goals.append((time.monotonic(), names, pos))

        def finish():
            with self.lock:
                j, v = names[0], pos[0]
                if j == "joint_gripper_finger_left":
                    wanted = v * 2 * FINGER_LEN
                    # closing on an object: the fingers stop at its width and the goal never completes
                    if wanted < self.object_width:
                        self.state["finger"] = self.object_width / (2 * FINGER_LEN)
                        self.effort = -60.0  # squeezing the object
                        return
                    self.state["finger"] = v
                    self.effort = -5.0
                elif j in self.state:
                    self.state[j] = v
            self.res_pub.publish(self.c.String(data=json.dumps({"seq": seq, "ok": True})))

        threading.Timer(0.15, finish).start()


class TopicTrajectoryClient:
    """Carries the backend's JointTrajectory goals over a topic instead of control_msgs' action (which is not
    installable here). Replaces only FollowJointTrajectoryClient; everything else is the real backend."""

    def __init__(self, node):
        from std_msgs.msg import String
        from trajectory_msgs.msg import JointTrajectory

        self.pub = node.create_publisher(JointTrajectory, "/fake_driver/goal", 10)
        self.cancel_pub = node.create_publisher(String, "/fake_driver/cancel", 10)
        self.String = String
        self.done: dict[str, bool] = {}
        self.seq = 0
        node.create_subscription(String, "/fake_driver/result", self._on_result, 10)

    def _on_result(self, msg):
        d = json.loads(msg.data)
        self.done[d["seq"]] = d["ok"]

    def server_ready(self):
        return self.pub.get_subscription_count() > 0

    def send(self, trajectory, timeout_s, halted, until=None):
        from flare_bringup.executors.base import MotionInterrupted

        self.seq += 1
        seq = str(self.seq)
        trajectory.header.frame_id = seq
        self.pub.publish(trajectory)
        end = time.monotonic() + timeout_s
        while seq not in self.done:
            if halted():
                self.cancel()
                raise MotionInterrupted("halted")
            if until is not None and until():
                return True, "settled before the goal completed"
            if time.monotonic() > end:
                return False, f"no result within {timeout_s:.0f} s"
            time.sleep(0.01)
        return self.done[seq], ""

    def cancel(self):
        self.cancel_pub.publish(self.String(data="cancel"))


def _driver_child():
    from flare_bringup.executor_node import run
    from flare_bringup.executors.stretch_driver_backend import DriverBackendConfig, StretchDriverBackend

    def factory(node):
        cfg = node.P.dataclass(DriverBackendConfig, overrides={"mode_topic": node.mode_topic})
        return StretchDriverBackend(node, cfg, trajectory_client=TopicTrajectoryClient(node),
                                    callback_group=node._drv_group, fallback_limits=node.param_limits())

    sys.exit(run("stretch", sys.argv, driver_factory=factory))


def test_stretch_driver_backend_goals_limits_services(domain, tmp_path):
    c = Client(domain)
    drv = FakeStretchDriverNode(c, mode="navigation")
    params = {"backend": "driver", "gripper_settle_s": 0.2, "grasp_min_effort": 20.0}
    proc = NodeProcess("stretch_executor_driver", [sys.executable, __file__, "--driver-child"] + ros_args(params),
                       ros_env(domain), tmp_path)
    try:
        assert c.wait_ready(True, 20), proc.output()
        assert "switch_to_position_mode" in drv.calls and "get_joint_states" in drv.calls
        assert c.wait(lambda: c.cmd_pub.get_subscription_count() > 0, 10)
        expect = []
        for action in ("move_ahead", "rotate_right", "move_arm_up", "move_arm_out", "wrist_open", "pickup",
                       "dropoff", "end", "sub_done"):
            r = c.result(c.send(action), 15)
            assert r and r["success"], (action, r, proc.output()[-3000:])
            expect.append((action, r))
        # held needs the squeeze effort stretch_driver reports (grasp_min_effort 20): read from joint_states
        assert expect[5][1]["in_hand"] and not expect[6][1]["in_hand"], expect[5]
        with drv.lock:
            goals = list(drv.goals)
        got = [(names, [round(v, 4) for v in pos]) for _, names, pos in goals]
        close_rad = (-10 * 0.09 / 70) / (2 * FINGER_LEN)  # FLaRe GraspTo(-10) in finger radians
        open_rad = (30 * 0.09 / 70) / (2 * FINGER_LEN)
        assert got == [
            (["translate_mobile_base"], [0.2]),
            (["rotate_mobile_base"], [round(-30 * DEG, 4)]),   # REP 103: right = negative yaw, relative
            (["joint_lift"], [1.08]),                           # 1.02 + 0.1 clipped to /joint_limits' 1.08
            (["wrist_extension"], [0.3]),                       # absolute: 0.2 (sum of joint_arm_l*) + 0.1
            (["joint_wrist_yaw"], [round(0.5 - 10 * DEG, 4)]),  # wrist_open = -10 deg
            (["joint_gripper_finger_left"], [round(close_rad, 4)]),
            (["joint_gripper_finger_left"], [round(open_rad, 4)]),
        ], got  # end / sub_done sent nothing
        gaps = [b[0] - a[0] for a, b in zip(goals, goals[1:])]
        assert min(gaps) >= 0.2, gaps  # stretch_driver rejects goals < 0.2 s apart

        # the arm is now at the lift limit: nothing is sent, failure reported
        r = c.result(c.send("move_arm_up_small"), 5)
        assert not r["success"] and "limit" in r["message"]
        assert len(drv.goals) == len(goals)

        # stop: cancelling alone does not stop a position-mode move upstream, so the running goal is preempted by
        # a zero-length move of the same joint; /stop_the_robot (which relaxes the gripper) is not called
        drv.object_width = 0.0
        n_goals = len(drv.goals)
        m = c.send("move_back")
        time.sleep(0.05)
        c.send_raw(json.dumps({"id": 500, "action": "stop"}))
        r = c.result(m, 5)
        assert r is not None and not r["success"] and "interrupted" in r["message"], r
        assert c.wait(lambda: len(drv.goals) >= n_goals + 2, 5), drv.goals[n_goals:]
        with drv.lock:
            after = [(names, pos) for _, names, pos in drv.goals[n_goals:]]
        assert after[0] == (["translate_mobile_base"], [pytest.approx(-0.2)]) and \
            after[1] == (["translate_mobile_base"], [0.0]), after
        assert not [g for g in after if g[0] == ["joint_gripper_finger_left"]]
        time.sleep(0.3)
        assert "stop_the_robot" not in drv.calls

        # driver reports runstopped mode -> not ready
        drv.mode = "runstopped"
        assert c.wait_ready(False, 5)
        drv.mode = "position"
        assert c.wait_ready(True, 5)
    finally:
        code = proc.stop(signal.SIGINT)
        c.close()
    assert code == 0, proc.output()


def test_stretch_driver_backend_old_driver_not_homed_tool_and_battery(domain, tmp_path):
    """A stretch_driver older than 2024-02-29 (no /get_joint_states), an un-homed robot, a low battery."""
    c = Client(domain)
    drv = FakeStretchDriverNode(c, mode="position", homed=False, get_joint_states=False, battery_v=10.1)
    params = {"backend": "driver", "limits_wait_s": 1.0, "home_if_needed": True, "limits.joint_lift": [0.0, 1.05]}
    proc = NodeProcess("stretch_executor_old_driver",
                       [sys.executable, __file__, "--driver-child"] + ros_args(params), ros_env(domain), tmp_path)
    try:
        assert c.wait_ready(True, 25), proc.output()[-3000:]
        out = proc.output()
        assert "robot not homed" in out and "home_the_robot" in drv.calls  # not ready until homed, then homed
        assert "using joint limits from the limits.* parameters" in out, out[-2000:]
        assert "battery low: 10.10 V" in out
        assert c.wait(lambda: c.cmd_pub.get_subscription_count() > 0, 10)
        r = c.result(c.send("move_arm_up"), 15)
        assert r and r["success"], (r, proc.output()[-2000:])
        with drv.lock:
            assert drv.goals[-1][1:] == (["joint_lift"], [pytest.approx(1.05)])  # 1.02 + 0.1 clipped to the YAML's
        drv.tool = "eoa_wrist_dw3_tool_sg3"  # not the RE1 gripper the grasp check assumes: not ready
        assert c.wait_ready(False, 5)
        r = c.result(c.send("move_arm_down"), 5)
        assert not r["success"] and "end-of-arm tool" in r["message"], r
        drv.tool = "tool_stretch_gripper"
        assert c.wait_ready(True, 5)
        # stretch_driver's own diagnostics (stretch_diagnostics.py names) at ERROR: not ready until they clear
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

        diag_pub = c.node.create_publisher(DiagnosticArray, "/diagnostics", 10)

        def diag(level, message):
            arr = DiagnosticArray()
            arr.status = [DiagnosticStatus(level=level, name="stretch_driver: Lift/Device", message=message),
                          DiagnosticStatus(level=DiagnosticStatus.ERROR, name="some_other_node: camera",
                                           message="not ours")]
            diag_pub.publish(arr)
        assert c.wait(lambda: diag_pub.get_subscription_count() > 0, 5)
        diag(DiagnosticStatus.ERROR, "Hardware not present")
        assert c.wait_ready(False, 5)
        r = c.result(c.send("move_arm_down"), 5)
        assert not r["success"] and "Lift/Device: Hardware not present" in r["message"], r
        assert "not ours" not in r["message"]
        diag(DiagnosticStatus.OK, "Hardware present and calibrated")
        assert c.wait_ready(True, 5)
    finally:
        code = proc.stop(signal.SIGINT)
        c.close()
    assert code == 0, proc.output()


if __name__ == "__main__" and "--driver-child" in sys.argv:
    _driver_child()
