"""flare_policy.episode.EpisodeController in-process, without ROS: the policy node's episode logic with a real
PolicyRunner (random tiny bundle, real MiniLM), driven by Image-shaped messages and JSON results.

The ROS tests (test_policy_node.py) check the same behaviour across processes; these pin the decisions
themselves, deterministically and fast: what may be acted on, one command at a time, every stop condition."""
from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from flare_policy.bundle import load_bundle
from flare_policy.episode import EpisodeController
from flare_policy.node_params import PolicyNodeParams, check_params
from flare_policy.protocol import CommandResult
from flare_policy.runner import PolicyRunner

from ros_helpers import tiny_bundle  # noqa: E402

torch.set_num_threads(1)


class Log:
    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def _add(self, level, msg, **_):
        self.lines.append((level, msg))

    def debug(self, msg, **kw):
        self._add("debug", msg, **kw)

    def info(self, msg, **kw):
        self._add("info", msg, **kw)

    def warning(self, msg, **kw):
        self._add("warning", msg, **kw)

    def error(self, msg, **kw):
        self._add("error", msg, **kw)


def image(stamp: float, size: int = 56, encoding: str = "rgb8"):
    sec = int(stamp)
    data = np.random.default_rng(int(stamp * 1e3) % 2**32).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=int((stamp - sec) * 1e9))),
                           encoding=encoding, height=size, width=size, step=size * 3, data=data.tobytes())


class Harness:
    def __init__(self, bundle_dir, **params):
        p = {k: v for k, (v, _) in PolicyNodeParams.SPEC.items()}
        p.update(bundle=str(bundle_dir), log_steps=False, **params)
        bundle = load_bundle(bundle_dir)
        self.commands: list[dict] = []
        self.status: list[dict] = []
        self.wakes = 0
        self.log = Log()
        self.ec = EpisodeController(
            PolicyRunner(bundle), check_params(p), {"raw_navigation_camera": "/camera/color/image_raw"},
            send_command=lambda s: self.commands.append(json.loads(s)),
            send_status=lambda s: self.status.append(json.loads(s)), wake=self._wake, logger=self.log)

    def _wake(self):
        self.wakes += 1

    def frame(self, stamp: float | None = None):
        self.ec.on_image("raw_navigation_camera", image(time.time() if stamp is None else stamp))
        self.ec.step()

    def result(self, cmd: dict, *, success: bool = True, in_hand: bool = False, stamp: float | None = None):
        self.ec.on_result(CommandResult(cmd["id"], cmd["action"], success, in_hand,
                                        time.time() if stamp is None else stamp).to_json())

    @property
    def outcome(self):
        ep = self.ec.episode
        return ep.outcome if ep else None


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    return {"random": tiny_bundle(root), "end": tiny_bundle(root, favour="end"),
            "ahead": tiny_bundle(root, favour="move_ahead")}


def test_acts_only_on_frames_stamped_after_the_goal_then_one_command_at_a_time(bundles):
    h = Harness(bundles["ahead"], require_ready=False)
    h.frame()  # before any goal: nothing to do
    h.ec.on_goal("go to the red ball")
    assert h.commands == []  # the frame predates the goal
    h.frame(stamp=time.time() - 0.2)  # older than the goal, though young enough
    assert h.commands == []
    h.frame()
    assert [c["action"] for c in h.commands] == ["move_ahead"]
    h.frame()
    h.frame()
    assert len(h.commands) == 1  # the outstanding command has no result yet
    first = h.commands[0]
    h.result(dict(first, id=first["id"] + 7))  # a result for another command: ignored
    h.result(dict(first, action="end"))  # the right id naming another action: ignored
    h.frame()
    assert len(h.commands) == 1
    t_result = time.time()
    h.result(first, stamp=t_result)
    assert len(h.commands) == 1  # the frame in hand was taken before the motion finished
    h.frame(stamp=t_result + 0.001)
    assert [c["action"] for c in h.commands] == ["move_ahead", "move_ahead"]
    assert h.commands[1]["id"] == first["id"] + 1 and h.commands[1]["episode"] == first["episode"]


def test_stale_or_invalid_frames_are_never_acted_on_and_the_episode_stops_at_the_frame_timeout(bundles):
    h = Harness(bundles["ahead"], require_ready=False, max_frame_age_s=0.2, frame_timeout_s=0.3)
    h.ec.on_goal("go to the red ball")
    future = time.time() + 5.0  # stamped after the goal, but from a clock 5 s ahead
    h.ec.on_image("raw_navigation_camera", image(future))
    h.ec.on_image("raw_navigation_camera", image(time.time(), encoding="32FC1"))  # rejected, counted
    h.ec.on_image("raw_navigation_camera", image(time.time(), size=4))
    h.ec.step()
    assert h.commands == []
    assert h.ec.cam_stats["raw_navigation_camera"].invalid == 2
    time.sleep(0.35)
    h.ec.step()
    assert [c["action"] for c in h.commands] == ["stop"]
    assert h.outcome == "camera_timeout" and "s old" in h.ec.episode.reason
    assert h.status[-1]["state"] == "finished" and not h.ec.runner.active  # KV-cache reset


def test_max_steps_sends_stop(bundles):
    h = Harness(bundles["ahead"], require_ready=False, max_steps=2)
    h.ec.on_goal("go to the red ball")
    for _ in range(2):
        h.frame()
        h.result(h.commands[-1])
    assert [c["action"] for c in h.commands] == ["move_ahead", "move_ahead", "stop"]
    assert h.outcome == "max_steps"
    h.frame()
    assert len(h.commands) == 3  # nothing after the episode finished


def test_end_finishes_without_stop_and_a_failed_start_pose_stops(bundles):
    h = Harness(bundles["end"], require_ready=False)
    h.ec.on_goal("go to the red ball")
    h.frame()
    assert [c["action"] for c in h.commands] == ["end"]
    h.result(h.commands[-1])
    assert h.outcome == "ended" and [c["action"] for c in h.commands] == ["end"]

    h = Harness(bundles["ahead"], require_ready=False, start_pose=True)
    h.ec.on_goal("go to the red ball")
    h.frame()
    assert [c["action"] for c in h.commands] == ["start_pose"]  # no policy step before the pose is reached
    h.result(h.commands[-1], success=False)
    assert h.outcome == "start_pose_failed" and h.commands[-1]["action"] == "stop"


def test_not_ready_holds_everything_and_its_time_does_not_count(bundles):
    h = Harness(bundles["ahead"], require_ready=True, frame_timeout_s=0.3)
    h.ec.on_goal("go to the red ball")
    h.frame()
    assert h.commands == [] and h.status[-1]["state"] == "paused"
    h.ec.on_ready(True)
    assert [c["action"] for c in h.commands] == ["move_ahead"]  # the fresh frame in hand is used at once
    h.ec.on_ready(False)  # runstop while the command runs
    h.result(h.commands[-1])
    h.frame()
    time.sleep(0.4)  # longer than frame_timeout_s, but paused
    h.ec.step()
    assert len(h.commands) == 1 and h.outcome is None
    h.ec.on_ready(True)
    h.frame()
    assert len(h.commands) == 2 and h.commands[-1]["action"] == "move_ahead"


def test_command_timeout_preemption_cancel_and_shutdown(bundles):
    h = Harness(bundles["ahead"], require_ready=False, command_timeout_s=0.2)
    h.ec.on_goal("go to the red ball")
    h.frame()
    time.sleep(0.25)
    h.ec.step()
    assert h.outcome == "timeout" and h.commands[-1]["action"] == "stop"

    h = Harness(bundles["ahead"], require_ready=False)
    h.ec.on_goal("go to the red ball")
    h.frame()
    first_episode = h.ec.episode
    h.ec.on_goal("")  # rejected: the running episode goes on
    assert h.ec.episode is first_episode and first_episode.outcome is None
    assert "rejected_goal" in h.status[-1]
    h.ec.on_goal("go to the blue key")
    assert first_episode.outcome == "preempted" and h.commands[-1]["action"] == "stop"
    assert h.ec.episode.id == first_episode.id + 1 and h.ec.episode.goal == "go to the blue key"
    assert h.ec.cancel() == (True, "episode cancelled") and h.outcome == "cancelled"
    assert h.ec.cancel()[0] is False and h.commands[-1]["action"] == "stop"  # stop sent anyway
    h.ec.on_goal("go to the red ball")
    h.ec.shutdown_stop()
    assert h.outcome == "shutdown" and h.commands[-1]["action"] == "stop"
    n = len(h.commands)
    h.ec.on_goal("go to the green box")
    h.frame()
    assert len(h.commands) == n  # nothing may follow the shutdown stop
