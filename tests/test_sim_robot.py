"""sim_robot alone (the protocol seen from the policy's side) and closed loop with policy_node, over real rclpy.

The closed-loop test uses the committed bundle `models/sim_tiny_bc` when it is committed (tracked by git) and
then also asserts success on fixed seeds; without it a random bundle checks the protocol only.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from ros_helpers import (Harness, committed_sim_bundle, new_domain, policy_node, sim_robot,  # noqa: E402
                         tiny_bundle)

pytestmark = pytest.mark.ros

# Seeds on which the committed bundle must succeed (objectnav, test split).
COMMITTED_TASK = "objectnav"
COMMITTED_SEEDS = [1_500_000_000, 1_500_000_006, 1_500_000_007]  # greedy successes of the committed BC bundle (flare-train eval --split test)


class Robot:
    """Extra endpoints on the harness node: a command publisher and sim-specific topics."""

    def __init__(self, h: Harness):
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import Bool, String

        rel = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=50)
        latched = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        sensor = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=10)
        self.h, self.String, self.Bool = h, String, Bool
        self.cmd_pub = h.node.create_publisher(String, "/flare/command", rel)
        self.reset_pub = h.node.create_publisher(String, "/sim/reset", rel)
        self.runstop_pub = h.node.create_publisher(Bool, "/sim/runstop", rel)
        self.ready: list[bool] = []
        self.episodes: list[dict] = []
        self.images: list[tuple[float, object]] = []
        h.node.create_subscription(Bool, "/flare/robot_ready", lambda m: self.ready.append(m.data), latched)
        h.node.create_subscription(String, "/sim/episode", lambda m: self.episodes.append(json.loads(m.data)),
                                   latched)
        h.node.create_subscription(Image, "/camera/color/image_raw", self._img, sensor)

    def _img(self, m):
        self.images.append((m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, m))

    def command(self, cid, action, episode=1):
        self.cmd_pub.publish(self.String(data=json.dumps({"id": cid, "action": action, "episode": episode})))

    def raw(self, text):
        self.cmd_pub.publish(self.String(data=text))

    def result(self, cid, timeout=15.0):
        got = []

        def pred():
            got[:] = [r for _, r in self.h.results if r["id"] == cid]
            return bool(got)
        self.h.wait(pred, timeout)
        return got[0] if got else None


def test_sim_robot_protocol(tmp_path):
    domain, env = new_domain()
    sim = sim_robot("sim_robot", env, tmp_path, task="pickup", seeds=[3, 4], camera_rate_hz=20.0)
    h = Harness(domain)
    r = Robot(h)
    try:
        assert h.wait(lambda: r.ready and r.ready[-1] and r.episodes, 60), sim.output()[-3000:]
        assert r.episodes[-1]["seed"] == 3 and r.episodes[-1]["task"] == "pickup" and r.episodes[-1]["goal"]
        assert h.wait(lambda: len(r.images) >= 3, 15)
        m = r.images[-1][1]
        assert (m.encoding, m.height, m.width, m.step, len(m.data)) == ("rgb8", 56, 56, 168, 56 * 56 * 3)
        stamps = [s for s, _ in r.images]
        assert stamps == sorted(stamps)
        assert h.wait_subscribers(r.cmd_pub, timeout=15)

        r.command(1, "move_ahead")
        res = r.result(1)
        assert res and res["success"] and res["in_hand"] is False and res["action"] == "move_ahead"
        assert h.wait(lambda: any(s > res["stamp"] for s, _ in r.images), 5), "no frame after the result"

        r.raw("{not json")  # malformed: logged, ignored
        r.raw(json.dumps({"id": "x", "action": "move_ahead"}))
        r.command(2, "fly_away")
        res = r.result(2)
        assert res and res["success"] is False and "unknown action" in res["message"]
        r.command(3, "stop")
        r.command(4, "rotate_left")
        assert r.result(4)["success"]
        assert r.result(3, timeout=0.3) is None, "stop must not be acknowledged"
        assert "malformed command" in sim.output()

        r.runstop_pub.publish(r.Bool(data=True))
        assert h.wait(lambda: r.ready[-1] is False, 10)
        r.command(5, "move_ahead")
        res = r.result(5)
        assert res["success"] is False and "runstop" in res["message"]
        r.runstop_pub.publish(r.Bool(data=False))
        assert h.wait(lambda: r.ready[-1] is True, 10)

        n_ep = len(r.episodes)
        r.reset_pub.publish(r.String(data=json.dumps({"seed": 7})))
        assert h.wait(lambda: len(r.episodes) > n_ep and r.episodes[-1]["seed"] == 7, 15)
        ep = r.episodes[-1]
        r.command(8, "move_ahead", episode=1)  # the policy episode that drove the previous sim episode
        res = r.result(8)
        assert res["success"] is False and "started before this sim episode" in res["message"]
        r.command(6, "end", episode=ep["episode"])
        res = r.result(6)
        assert res["success"]
        assert h.wait(lambda: h.outcomes, 10)
        out = h.outcomes[-1][1]
        assert out["seed"] == 7 and out["reason"] == "end" and out["steps"] == 1 and out["success"] is False
        assert out["sel"] == 0.0 and out["expert_length"] > 0 and out["goal"] == ep["goal"]
        r.command(7, "move_ahead", episode=ep["episode"])
        res = r.result(7)
        assert res["success"] is False and "episode over" in res["message"]
        r.reset_pub.publish(r.String(data="next"))
        assert h.wait(lambda: r.episodes[-1]["seed"] == 4, 15)
        assert sim.alive()
    finally:
        rc = sim.stop(signal.SIGINT, timeout=20)
        h.wait(lambda: r.ready and r.ready[-1] is False, 5)
        h.close()
    assert rc == 0, sim.output()[-3000:]
    assert r.ready[-1] is False, "sim_robot must report not-ready when shutting down"
    assert "Traceback" not in sim.output() and "never retrieved" not in sim.output()


def _run_episode(h, r, seed, task, timeout):
    n_out, n_ep = len(h.outcomes), len(r.episodes)
    assert h.wait_subscribers(r.reset_pub, timeout=20)
    r.reset_pub.publish(r.String(data=json.dumps({"seed": seed, "task": task})))
    assert h.wait(lambda: len(r.episodes) > n_ep and r.episodes[-1]["seed"] == seed
                  and r.episodes[-1]["task"] == task, 20), "sim_robot did not reset"
    info = r.episodes[-1]
    ep = h.start_episode(info["goal"])
    assert h.wait(lambda: len(h.outcomes) > n_out, timeout), "no episode outcome from sim_robot"
    return ep, info, h.outcomes[-1][1]


def _check_protocol(h, ep):
    """Exactly one outstanding command, checked exactly from the node's own step reports: step k+1 names the
    stamp of command k's result as the one it waited for (so it had received it), ids increase by one, and
    every frame it used is stamped after that result. (Arrival order at an observer across two topics says
    nothing: an executor may hand it the command before the result that caused it.)"""
    # the node reports a step on /flare/status after publishing its command, and sim_robot's outcome for the last
    # command can reach this observer first on a loaded machine: wait for a report of every command
    n_cmds = lambda: len([c for c in h.episode_commands(ep) if c["action"] != "stop"])  # noqa: E731
    h.wait(lambda: len(h.statuses(ep, with_command=True)) >= n_cmds(), 10)
    steps = h.statuses(ep, with_command=True)
    assert steps, "no step status"
    with h.lock:
        results = {r["id"]: r for _, r in h.results}
    cmds = [c for c in h.episode_commands(ep) if c["action"] != "stop"]
    ids = [c["id"] for c in cmds]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "command ids must increase by one"
    assert [st["command_id"] for st in steps] == ids
    assert [st["decision_step"] for st in steps] == list(range(len(steps)))
    for prev, st in zip(steps, steps[1:]):
        # the node waited for the previous command's result, then for a frame stamped after it
        assert prev["command_id"] in results
        assert st["after_stamp"] == pytest.approx(results[prev["command_id"]]["stamp"], abs=1e-6)
        assert all(f > st["after_stamp"] for f in st["frame_stamps"].values())
    return steps


def test_closed_loop_with_sim_robot(tmp_path):
    committed = committed_sim_bundle()
    bundle = committed or tiny_bundle(tmp_path)
    task = COMMITTED_TASK if committed else "pickup"  # pickup: 64 steps, a short random episode
    seeds = COMMITTED_SEEDS if committed else [11]
    domain, env = new_domain()
    from flare_training.envs import TASKS

    sim = sim_robot("sim_robot", env, tmp_path, task=task, seeds=seeds)
    pol = policy_node("policy_node", bundle, env, tmp_path, max_steps=TASKS[task].max_steps)
    h = Harness(domain)
    r = Robot(h)
    outcomes = []
    try:
        assert h.wait_subscribers(h.goal_pub, timeout=60), pol.output()[-3000:]
        for seed in seeds:
            ep, info, out = _run_episode(h, r, seed, task, timeout=90)
            assert out["seed"] == seed and out["task"] == task and out["goal"] == info["goal"]
            assert set(out) >= {"success", "sel", "steps", "expert_length", "reason"}
            steps = _check_protocol(h, ep)
            assert out["steps"] == len(steps) or out["reason"] == "truncated"
            outcomes.append(out)
            if out["reason"] == "end":
                assert h.wait(lambda: (h.outcome_of(ep, 0) or {}).get("outcome") == "ended", 10)
        n = len(h.stops())
        assert pol.alive() and sim.alive()
        pol.send(signal.SIGINT)
        assert pol.wait(30) == 0, pol.output()[-3000:]
        assert h.wait(lambda: len(h.stops()) > n, 10), "no stop on SIGINT"
    finally:
        pol.stop()
        rc_sim = sim.stop()
        h.close()
    assert rc_sim == 0
    assert "Traceback" not in pol.output() + sim.output()
    if committed:
        failed = [o["seed"] for o in outcomes if not o["success"]]
        assert not failed, f"committed bundle failed on seeds {failed}: {outcomes}"


def test_end_finishes_the_episode(tmp_path):
    bundle = tiny_bundle(tmp_path, favour="end")
    domain, env = new_domain()
    sim = sim_robot("sim_robot", env, tmp_path, task="objectnav", seeds=[5])
    pol = policy_node("policy_node", bundle, env, tmp_path)
    h = Harness(domain)
    r = Robot(h)
    try:
        assert h.wait_subscribers(h.goal_pub, timeout=60), pol.output()[-3000:]
        ep, info, out = _run_episode(h, r, 5, "objectnav", timeout=30)
        assert out["reason"] == "end" and out["steps"] == 1
        st = h.outcome_of(ep, 10)
        assert st is not None and st["outcome"] == "ended" and st["step"] == 1
        time.sleep(0.5)
        cmds = h.episode_commands(ep)
        assert [c["action"] for c in cmds] == ["end"], f"commands after end: {cmds}"
        # the next goal starts a fresh episode (cache reset: step 0 again)
        ep2, _, out2 = _run_episode(h, r, 6, "objectnav", timeout=30)
        assert ep2 == ep + 1 and h.statuses(ep2, with_command=True)[0]["decision_step"] == 0
        # after an `end` (logged at info) other outcomes (warnings) still work: preempt, then shut down
        r.runstop_pub.publish(r.Bool(data=True))  # paused: the next episode cannot `end` before it is preempted
        assert h.wait(lambda: r.ready and r.ready[-1] is False, 10)
        h.publish_goal("go to the red ball")
        assert h.wait(lambda: any(st.get("episode") == ep2 + 1 for st in h.statuses()), 15)
        h.publish_goal("go to the blue ball")
        assert h.wait(lambda: (h.outcome_of(ep2 + 1, 0) or {}).get("outcome") == "preempted", 15)
    finally:
        rc = pol.stop()
        sim.stop()
        h.close()
    assert rc == 0 and "Traceback" not in pol.output(), pol.output()[-3000:]


def test_sim_robot_and_demo_do_not_import_torch():
    import subprocess

    code = ("import sys, flare_bringup.sim_robot as s, flare_bringup.demo, flare_bringup.rosproc\n"
            "e = s.SimEpisode('pickup'); e.reset(1); e.execute('move_ahead'); e.execute('end')\n"
            "assert issubclass(s.SimRobotNode, __import__('rclpy.node').node.Node)\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_demo_end_to_end(tmp_path):
    """`flare-demo` (what `make demo` runs): two node processes, one episode, printed steps, a GIF, exit 0."""
    import subprocess

    from PIL import Image

    bundle = committed_sim_bundle() or tiny_bundle(tmp_path)
    out_dir = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "flare_bringup.demo", "--bundle", str(bundle), "--task", "pickup",
                           "--seeds", "1500000003", "--out", str(out_dir)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "=== episode 1: pickup seed 1500000003" in proc.stdout
    assert "ep 1 step   0" in proc.stdout and "--- episode 1:" in proc.stdout
    gif = Image.open(out_dir / "episode.gif")
    assert gif.n_frames >= 2
