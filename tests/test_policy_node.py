"""policy_node in its own process against an in-test robot (cameras + executor) over real rclpy.

One node process serves the whole module (each test starts its own episode with a new goal, which preempts
whatever the previous test left running); the last test shuts it down with SIGTERM. Timeouts are short
(frame/command timeouts 1.5 s) to keep the module fast.
"""
from __future__ import annotations

import signal
import sys
import time

import pytest

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from ros_helpers import Harness, make_image, new_domain, policy_node, tiny_bundle  # noqa: E402

pytestmark = pytest.mark.ros

TIMEOUT_S = 1.5  # frame timeout
COMMAND_TIMEOUT_S = 4.0  # the harness answers from the test process; leave it room on a busy runner
MAX_STEPS = 12


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("policy_node")
    domain, env = new_domain()
    bundle = tiny_bundle(tmp)
    proc = policy_node("policy_node", bundle, env, tmp, frame_timeout_s=TIMEOUT_S, command_timeout_s=COMMAND_TIMEOUT_S,
                       max_frame_age_s=0.5, max_steps=MAX_STEPS)
    h = Harness(domain)
    try:
        assert h.wait_subscribers(h.goal_pub, timeout=60), f"node did not come up:\n{proc.output()[-3000:]}"
        assert h.wait_subscribers(h.image_pub, timeout=10)
        yield h, proc
    finally:
        h.close()
        proc.stop()


def _motions(h, ep) -> int:
    return len([c for c in h.episode_commands(ep) if c["action"] != "stop"])


def _alive(proc):
    assert proc.alive(), f"policy_node died:\n{proc.output()[-4000:]}"


def test_no_command_before_robot_ready(live):
    h, proc = live
    ep = h.start_episode("go to the red ball")
    h.start_pump()
    time.sleep(1.0)
    assert h.motion_commands() == [], "a command was sent before the robot reported ready"
    assert h.statuses(ep)[-1]["state"] == "paused"
    h.mode = "auto"
    h.publish_ready(True)
    assert h.wait(lambda: len(h.episode_commands(ep)) >= 1, 15.0), "no command after ready"
    _alive(proc)


def test_closed_loop_protocol_and_max_steps(live):
    h, proc = live
    h.mode = "auto"
    h.stop_pump()  # frames now come only from the executor: one stale (before the result), then the pump
    ep = h.start_episode("find the blue key")
    h.start_pump(rate=25)
    out = h.outcome_of(ep, timeout=40.0)
    assert out is not None and out["outcome"] == "max_steps", out
    cmds = h.episode_commands(ep)
    motion = [c for c in cmds if c["action"] != "stop"]
    assert len(motion) == MAX_STEPS
    ids = [c["id"] for c in cmds]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), f"ids not increasing: {ids}"
    assert [c["id"] for c in motion] == list(range(motion[0]["id"], motion[0]["id"] + MAX_STEPS))
    assert cmds[-1]["action"] == "stop", "max_steps must end with a stop"
    assert not h.violations, h.violations
    steps = h.statuses(ep, with_command=True)
    assert [st["decision_step"] for st in steps] == list(range(MAX_STEPS))
    for prev, st in zip([None] + steps[:-1], steps):
        fs = list(st["frame_stamps"].values())
        assert all(f > st["after_stamp"] for f in fs), st
        assert not set(fs) & set(h.stale_stamps), "acted on a frame stamped before the result"
        if prev is not None:  # the wait was for the previous command's result
            assert st["after_stamp"] == pytest.approx(h.sent_results[prev["command_id"]], abs=1e-6)
        assert st["latency_ms"] > 0 and len(st["top"]) == 3 and abs(sum(st["probs"].values()) - 1) < 1e-2
    _alive(proc)


def test_runstop_pauses_without_timing_out(live):
    h, proc = live
    h.mode = "auto"
    h.start_pump()
    ep = h.start_episode("locate the green box")
    assert h.wait(lambda: len(h.episode_commands(ep)) >= 2, 15.0)
    try:
        n_status = len(h.statuses(ep))
        h.publish_ready(False)
        # the node acknowledges the runstop in its status; a command already being inferred may still go out
        assert h.wait(lambda: any(not st["ready"] for st in h.statuses(ep)[n_status:]), 15.0), "pause not reported"
        time.sleep(0.5)  # status and command topics are not ordered with respect to each other
        n = len(h.episode_commands(ep))
        time.sleep(COMMAND_TIMEOUT_S + 0.7)  # longer than both timeouts: the episode clock must be paused
        assert len(h.episode_commands(ep)) == n, "commands sent while the robot was not ready"
        last = h.statuses(ep)[-1]
        assert last["state"] == "paused" and last["outcome"] is None, last
    finally:
        h.publish_ready(True)  # later tests in this module need a ready robot even if this one failed
    assert h.wait(lambda: len(h.episode_commands(ep)) > n, 15.0), "did not resume after ready"
    assert h.statuses(ep)[-1]["outcome"] in (None, "max_steps")
    _alive(proc)


def test_new_goal_preempts_and_resets(live):
    h, proc = live
    h.mode = "auto"
    h.start_pump()
    a = h.start_episode("pick up the yellow ball")
    assert h.wait(lambda: len(h.statuses(a, with_command=True)) >= 3, 15.0)
    n_stop = len(h.stops())
    b = h.start_episode("find the purple key")
    assert b == a + 1
    assert h.wait(lambda: len(h.statuses(b, with_command=True)) >= 2, 15.0)
    assert len(h.stops()) > n_stop, "preemption must send stop"
    assert h.outcome_of(a, 10.0)["outcome"] == "preempted"
    first = h.statuses(b, with_command=True)[0]
    assert first["decision_step"] == 0 and first["goal"] == "find the purple key"
    _alive(proc)


def test_bad_goals_rejected(live):
    h, proc = live
    h.mode = "auto"
    h.start_pump()
    ep = h.start_episode("navigate to the grey box")
    assert h.wait(lambda: len(h.episode_commands(ep)) >= 1, 15.0)
    # hold the episode on a runstop while the bad goals arrive, so that it cannot reach max_steps meanwhile
    # on a slow machine: whatever happens to it then is the rejected goals' doing
    n_status = len(h.statuses(ep))
    h.publish_ready(False)
    try:
        assert h.wait(lambda: any(not st["ready"] for st in h.statuses(ep)[n_status:]), 15.0), "pause not reported"
        for bad in ["", "   \n\t ", "x" * 5000]:
            n = len(h.statuses())
            h.publish_goal(bad)
            assert h.wait(lambda: any("rejected_goal" in st for st in h.statuses()[n:]), 15.0), repr(bad[:10])
        assert h.statuses()[-1]["episode"] == ep, "a rejected goal must not replace the running episode"
        assert h.statuses(ep)[-1]["outcome"] is None, h.statuses(ep)[-1]
    finally:
        h.publish_ready(True)
    n = len(h.episode_commands(ep))
    assert h.wait(lambda: len(h.episode_commands(ep)) > n, 15.0), "the running episode stopped"
    assert "goal rejected" in proc.output()
    _alive(proc)


def test_invalid_frames_never_acted_on(live):
    h, proc = live
    h.mode = None
    h.stop_pump()
    ep = h.start_episode("search for the red box")
    bad = [make_image(encoding="mono8"), make_image(encoding="32FC3", data=b"\xff\xff\xc0\x7f" * (56 * 56 * 3),
                                                      step=56 * 12),  # NaNs
           make_image(encoding="rgba8"), make_image(h=56, w=56, data=b"\x00" * 100),  # truncated
           make_image(h=56, w=56, step=100), make_image(h=0, w=0, data=b""), make_image(h=4, w=4),
           make_image(stamp=0.0), make_image(encoding="")]
    # Best-effort depth-1 camera QoS lets a busy node see only some of these; keep sending until it has
    # rejected at least one, then check nothing was acted on.
    end = time.monotonic() + 15.0
    while "rejected frame" not in proc.output() and time.monotonic() < end:
        for m in bad:
            h.publish_frame(msg=m)
            time.sleep(0.005)
        time.sleep(0.1)
    assert "rejected frame" in proc.output(), "no invalid frame was reported as rejected"
    time.sleep(0.5)
    assert _motions(h, ep) == 0, f"acted on an invalid frame: {h.episode_commands(ep)}"
    _alive(proc)
    if h.episode_commands(ep):
        # Invalid frames are no fresh frames: when the rejection took longer than frame_timeout_s to show (a
        # loaded runner), the episode rightly ended in camera_timeout with its closing `stop`.
        out = h.outcome_of(ep)
        assert out is not None and out["outcome"] == "camera_timeout", out
        ep = h.start_episode("search for the red box")
    # valid frames again: the node must still work
    assert h.publish_frames_until(lambda: _motions(h, ep) >= 1, 15.0)
    assert _motions(h, ep) == 1
    assert h.wait(lambda: any(int(dict((kv.key, kv.value) for kv in s.values).get("invalid", 0)) > 0
                              for m in h.diagnostics for s in m.status), 15.0), "diagnostics miss invalid frames"


def test_stale_frames_then_camera_timeout(live):
    h, proc = live
    h.stop_pump()
    h.mode = "auto"
    h.stale_after_result = False
    h.result_stamp_offset = -3.0  # results stamped 3 s ago: frames 1 s old are newer but too old to use
    h.auto_delay = 0.8  # by the time the result comes, the frame the first command came from is 0.8 s old
    try:
        ep = h.start_episode("go to the blue ball")
        # One fresh frame is not enough to start on: sensor-data QoS may drop it, and a loaded runner may take
        # longer than max_frame_age_s to reach it, after which the node rightly refuses it and the episode
        # ends in camera_timeout before it ever moved. Stream fresh frames, as a camera does, until the first
        # motion command is out (a closing `stop` must not count as that command).
        assert h.publish_frames_until(lambda: _motions(h, ep) >= 1, 15.0), \
            f"never acted on fresh frames: {h.episode_commands(ep)} {h.statuses(ep)[-1:]}"
        h.start_pump(age=1.0)  # newer than the result's stamp, older than max_frame_age_s
        out = h.outcome_of(ep, timeout=TIMEOUT_S + 15.0)
        assert out is not None and out["outcome"] == "camera_timeout", out
        cmds = h.episode_commands(ep)
        assert [c["action"] for c in cmds][1:] == ["stop"], f"acted on stale frames: {cmds} ({out['reason']})"
        assert "old" in out["reason"], out  # it waited on frames that were too old, not on missing ones
    finally:
        h.stale_after_result = True
        h.result_stamp_offset = 0.0
        h.auto_delay = 0.01
    # a camera that stops altogether
    h.stop_pump()
    # the result comes 0.3 s after the command, so every frame streamed until the command was seen is stamped
    # before the result and cannot start a second step
    h.auto_delay = 0.3
    try:
        ep = h.start_episode("go to the green key")
        assert h.publish_frames_until(lambda: _motions(h, ep) >= 1, 15.0), h.episode_commands(ep)
        out = h.outcome_of(ep, timeout=TIMEOUT_S + 15.0)
    finally:
        h.auto_delay = 0.01
    assert out is not None and out["outcome"] == "camera_timeout", out
    assert [c["action"] for c in h.episode_commands(ep)][-1] == "stop"
    assert len([c for c in h.episode_commands(ep) if c["action"] != "stop"]) == 1
    _alive(proc)


def test_executor_never_acknowledges(live):
    h, proc = live
    h.mode = "silent"
    h.start_pump()
    ep = h.start_episode("find the yellow key")
    out = h.outcome_of(ep, timeout=COMMAND_TIMEOUT_S + 15.0)
    assert out is not None and out["outcome"] == "timeout", out
    cmds = h.episode_commands(ep)
    assert [c["action"] for c in cmds][-1] == "stop" and len(cmds) == 2, cmds
    _alive(proc)


def test_sigterm_publishes_stop_and_exits_cleanly(live):
    h, proc = live
    h.mode = "auto"
    h.start_pump()
    ep = h.start_episode("locate the purple ball")
    assert h.wait(lambda: len(h.episode_commands(ep)) >= 2, 15.0)
    n = len(h.stops())
    proc.send(signal.SIGTERM)
    rc = proc.wait(30.0)
    assert rc == 0, proc.output()[-3000:]
    assert h.wait(lambda: len(h.stops()) > n, 10.0), "no stop on SIGTERM"
    assert h.outcome_of(ep, 10.0)["outcome"] == "shutdown"
    assert "Traceback" not in proc.output()
