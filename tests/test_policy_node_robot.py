"""policy_node features for a first run on a robot, over real rclpy against an in-test robot:

* a camera that publishes nothing is reported by topic (log, /diagnostics ERROR, silent_cameras in status), with
  a hint naming the Image topic that does exist (realsense-ros >= 4.55 adds a camera/ level to the name);
* with start_pose, every episode begins with a `start_pose` command, no step is inferred before its result,
  the first frame used is stamped after that result, and a failed start pose ends the episode with a stop.
"""
from __future__ import annotations

import sys
import threading
import time

import pytest

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from ros_helpers import Harness, new_domain, policy_node, tiny_bundle  # noqa: E402

pytestmark = pytest.mark.ros

NODE_TOPIC = "/locobot/camera/color/image_raw"  # what the node is told (realsense-ros <= 4.54 naming)
REAL_TOPIC = "/locobot/camera/camera/color/image_raw"  # what the camera publishes (>= 4.55)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("policy_node_robot")
    domain, env = new_domain()
    proc = policy_node("policy_node", tiny_bundle(tmp), env, tmp, navigation_camera_topic=NODE_TOPIC,
                       camera_silent_s=1.0, start_pose=True, frame_timeout_s=3.0, command_timeout_s=6.0,
                       max_frame_age_s=0.5, max_steps=3)
    h = Harness(domain, camera_topic=REAL_TOPIC)  # frames go to the other name only
    try:
        assert h.wait_subscribers(h.goal_pub, timeout=60), f"node did not come up:\n{proc.output()[-3000:]}"
        yield h, proc
    finally:
        h.close()
        proc.stop()


def test_silent_camera_is_reported_with_the_topic_that_exists(live):
    h, proc = live
    h.start_pump(rate=5)
    try:
        def silent():
            for st in h.statuses():
                hint = st.get("silent_cameras", {}).get(NODE_TOPIC, "")
                if REAL_TOPIC in hint:
                    return hint
            return None
        hint = h.wait(silent, 20.0)
        assert hint and "no publisher on that topic" in hint, (hint, proc.output()[-2000:])
        from diagnostic_msgs.msg import DiagnosticStatus

        assert h.wait(lambda: any(s.level == DiagnosticStatus.ERROR and "silent" in s.message
                                  and s.hardware_id == NODE_TOPIC for m in h.diagnostics for s in m.status),
                      10.0), "no ERROR diagnostics"
        out = proc.output()
        assert f"nothing received on {NODE_TOPIC}" in out and REAL_TOPIC in out, out[-2000:]
        assert out.count(f"nothing received on {NODE_TOPIC}") == 1  # reported once, not every second
    finally:
        h.stop_pump()
    assert proc.alive()


def test_start_pose_precedes_every_episode_and_its_failure_stops(live):
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    h, proc = live
    h.image_pub = h.node.create_publisher(Image, NODE_TOPIC, QoSProfile(
        reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=1))
    assert h.wait_subscribers(h.image_pub, timeout=20)
    answer = {"start_pose": None}  # None: leave it outstanding; else (success, message)
    results = {}

    def on_command(cmd):
        if cmd["action"] == "start_pose" and answer["start_pose"] is not None:
            ok, message = answer["start_pose"]
            results[cmd["id"]] = h.publish_result(cmd, success=ok, message=message).stamp
        elif cmd["action"] not in ("stop", "start_pose"):
            threading.Timer(0.01, lambda: h.publish_result(cmd)).start()

    h.on_command = on_command
    h.publish_ready(True)
    try:
        ep = h.start_episode("find the red ball")
        assert h.wait(lambda: h.episode_commands(ep), 10.0)
        assert h.episode_commands(ep)[0]["action"] == "start_pose"
        # while the start pose runs, fresh frames must not start the episode
        h.start_pump(rate=10)
        time.sleep(1.0)
        assert [c["action"] for c in h.episode_commands(ep)] == ["start_pose"], h.episode_commands(ep)
        h.stop_pump()
        pose_cmd = h.episode_commands(ep)[0]
        results[pose_cmd["id"]] = h.publish_result(pose_cmd, message="start_pose: done").stamp
        assert h.publish_frames_until(lambda: len(h.statuses(ep, with_command=True)) >= 1, 15.0), \
            proc.output()[-2000:]
        first = h.statuses(ep, with_command=True)[0]
        assert first["decision_step"] == 0
        assert first["after_stamp"] == pytest.approx(results[pose_cmd["id"]], abs=1e-6)
        assert all(s > results[pose_cmd["id"]] for s in first["frame_stamps"].values())

        # a start pose that fails: the episode ends (start_pose_failed) with a stop and no motion
        answer["start_pose"] = (False, "start_pose failed after []: joint_lift -> 0.7000: goal rejected")
        ep2 = h.start_episode("find the blue key")
        out = h.outcome_of(ep2, 15.0)
        assert out is not None and out["outcome"] == "start_pose_failed" and "goal rejected" in out["reason"], out
        assert [c["action"] for c in h.episode_commands(ep2)] == ["start_pose", "stop"]
    finally:
        h.on_command = None
        h.stop_pump()
    assert proc.alive()
