"""policy_node's episode logic, ROS-free: frames in, one command at a time out, every stop condition.

`EpisodeController` holds what an episode needs (the PolicyRunner and its KV-cache, the latest frame of each
camera, the outstanding command, the robot's readiness and the episode clock) and decides every step; the
rclpy node (flare_policy.node) only turns messages into calls to it and its outputs into messages:

    node callback          controller                     controller output (callables the node passes in)
    camera Image        -> on_image(name, msg)            wake() when a frame may unblock the episode
    goal String         -> on_goal(text)                  send_command(json), send_status(json)
    result String       -> on_result(json)
    ready Bool          -> on_ready(flag)
    ~/cancel            -> cancel()
    guard / 20 Hz timer -> step()                         timeouts, freshness, inference, one command

Locking: `lock` (re-entrant) guards the episode and the runner, `frame_lock` the latest frames; camera callbacks
take only `frame_lock`, so a frame is never blocked by inference.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .preprocess import FrameError, image_to_array
from .protocol import START_POSE, STOP, Command, CommandResult, ProtocolError

MIN_SIDE = 8  # frames with a side below this many pixels are rejected as implausible
OUTCOMES = ("ended", "max_steps", "timeout", "camera_timeout", "start_pose_failed", "preempted", "cancelled",
            "shutdown", "error")


# ---------------------------------------------------------------------------------------------------------
# message -> array validation (pure: used by the camera callbacks and fuzzed in-process by the tests)

def stamp_to_float(stamp) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def frame_from_msg(msg) -> tuple[np.ndarray, float]:
    """sensor_msgs/Image -> ((H, W, 3) uint8 RGB, header stamp in seconds); FrameError if unusable.

    Rejected: encodings other than rgb8/bgr8 (so float images and their NaNs never get in), zero or
    implausible sizes, a row step below width*3, data not exactly step*height bytes (truncated or padded),
    and unstamped frames (a zero stamp cannot be checked for freshness)."""
    stamp = msg.header.stamp
    if stamp.sec < 0 or (stamp.sec == 0 and stamp.nanosec == 0):
        raise FrameError(f"frame has no valid header stamp ({stamp.sec}.{stamp.nanosec:09d}); its age cannot be "
                         f"checked")
    if not 0 <= stamp.nanosec < 1_000_000_000:
        raise FrameError(f"frame stamp has nanosec {stamp.nanosec} out of range")
    img = image_to_array(msg.encoding, msg.height, msg.width, msg.step, msg.data)
    if min(img.shape[:2]) < MIN_SIDE:
        raise FrameError(f"implausibly small frame {img.shape[1]}x{img.shape[0]} (min side {MIN_SIDE})")
    return img, stamp_to_float(stamp)


# ---------------------------------------------------------------------------------------------------------

@dataclass
class Frame:
    image: np.ndarray
    stamp: float  # header stamp, seconds
    received: float  # perf_counter at callback


@dataclass
class CameraStats:
    topic: str
    received: int = 0
    invalid: int = 0
    last_error: str = ""
    times: deque = field(default_factory=lambda: deque(maxlen=300))  # monotonic receive times
    silent_hint: str = ""  # set while the topic has been silent for camera_silent_s

    def rate(self, now: float, window: float = 3.0) -> float:
        ts = [t for t in self.times if now - t <= window]
        if len(ts) < 2:
            return 0.0
        return (len(ts) - 1) / max(ts[-1] - ts[0], 1e-6)


@dataclass
class Episode:
    id: int
    goal: str
    started_wall: float
    state: str = "waiting_frames"  # start_pose | waiting_frames | waiting_result | finished
    step: int = 0  # commands sent
    need_after: float = 0.0  # frames must be stamped after this (seconds)
    wait_since: float = 0.0  # active clock when the wait for frames started
    pending: Command | None = None
    pending_since: float = 0.0  # active clock
    trigger: float = 0.0  # perf_counter when the result arrived
    last_action: str | None = None
    last_result: dict | None = None
    outcome: str | None = None
    reason: str = ""


class ActiveClock:
    """Monotonic seconds that do not advance while paused (robot not ready): the episode clock."""

    def __init__(self):
        self._paused_total = 0.0
        self._pause_start: float | None = None

    def now(self) -> float:
        t = time.monotonic()
        paused = self._paused_total + ((t - self._pause_start) if self._pause_start is not None else 0.0)
        return t - paused

    def pause(self):
        if self._pause_start is None:
            self._pause_start = time.monotonic()

    def resume(self):
        if self._pause_start is not None:
            self._paused_total += time.monotonic() - self._pause_start
            self._pause_start = None


def _inference_mode():
    import torch  # the runner already imported it; deferred so this module's pure parts stay torch-free

    return torch.inference_mode()


class EpisodeController:
    """One episode at a time on one robot: goal -> [start_pose] -> (fresh frames -> infer -> command -> result)*.

    `p` is the checked parameter set (flare_policy.node_params); `camera_topics` maps each bundle camera to its
    topic (for messages); `logger` has rclpy's info/warning/error/debug (with `throttle_duration_sec`)."""

    def __init__(self, runner, p: dict, camera_topics: dict[str, str], *, send_command: Callable[[str], None],
                 send_status: Callable[[str], None], wake: Callable[[], None], logger):
        self.runner, self.p, self.log = runner, p, logger
        self.bundle = runner.bundle
        self.actions = self.bundle.actions
        self._send_command, self._send_status, self._wake = send_command, send_status, wake
        self.lock = threading.RLock()  # episode + runner
        self.frame_lock = threading.Lock()  # frames + cam_stats counters
        self.clock_active = ActiveClock()
        self.closing = False
        self._next_id = 1
        self._episode_count = 0
        self.episode: Episode | None = None
        self.last_in_hand = False
        self.latencies: deque = deque(maxlen=200)
        self.overheads: deque = deque(maxlen=200)
        self.steps_total = 0
        self._warm = False
        self.t_start = time.monotonic()
        self.ready = not p["require_ready"]
        self.ready_seen = False
        if not self.ready:
            self.clock_active.pause()
        self.frames: dict[str, Frame] = {}  # latest frame per camera
        self.cam_stats = {spec.name: CameraStats(camera_topics[spec.name]) for spec in self.bundle.cameras}

    # ---------------------------------------------------------------- inputs
    def on_image(self, name: str, msg) -> None:
        t = time.perf_counter()
        stats = self.cam_stats[name]
        try:
            img, stamp = frame_from_msg(msg)
        except FrameError as e:
            stats.invalid += 1
            stats.last_error = str(e)
            self.log.warning(f"camera {name} ({stats.topic}): rejected frame: {e} [{stats.invalid} rejected so far]",
                             throttle_duration_sec=2.0)
            return
        with self.frame_lock:
            self.frames[name] = Frame(img, stamp, t)
            stats.received += 1
            stats.times.append(time.monotonic())
        ep = self.episode
        if ep is not None and ep.state == "waiting_frames":
            self._wake()

    def on_ready(self, ready: bool) -> None:
        with self.lock:
            was = self.ready
            self.ready, self.ready_seen = bool(ready), True
            if self.ready and not was:
                self.clock_active.resume()
                self.log.info("robot ready")
            elif not self.ready and was:
                self.clock_active.pause()
                self.log.warning("robot not ready (runstop?): episode paused, no commands")
            if was != self.ready and self.episode is not None:
                self.publish_status()
        self.step()

    def on_goal(self, text) -> None:
        from .runner import GoalError, validate_goal

        with self.lock:
            if self.closing:
                return
            try:
                goal = validate_goal(text)
            except GoalError as e:
                shown = str(text)[:60] + ("..." if len(str(text)) > 60 else "")
                self.log.error(f"goal rejected: {e} (got {shown!r}); the running episode, if any, continues")
                self.publish_status(extra={"rejected_goal": str(e)})
                return
            if self.episode is not None and self.episode.state != "finished":
                self.finish("preempted", send_stop=True, reason=f"new goal {goal!r}")
            try:
                with _inference_mode():
                    self.runner.start_episode(goal)
            except Exception as e:  # noqa: BLE001 - the text encoder failing must not kill the node
                self.log.error(f"cannot start episode for goal {goal!r}: {e}")
                return
            self._episode_count += 1
            now = time.time()
            self.episode = Episode(self._episode_count, goal, now, need_after=now, wait_since=self.clock_active.now(),
                                   state="start_pose" if self.p["start_pose"] else "waiting_frames")
            self.log.info(f"episode {self._episode_count}: goal {goal!r}")
            self.publish_status()
        self.step()

    def on_result(self, text: str) -> None:
        t = time.perf_counter()
        try:
            res = CommandResult.from_json(text)
        except ProtocolError as e:
            self.log.warning(f"ignoring malformed command result: {e}", throttle_duration_sec=2.0)
            return
        with self.lock:
            ep = self.episode
            if ep is None or ep.pending is None or res.id != ep.pending.id:
                self.log.debug(f"ignoring result for command {res.id} (not outstanding)")
                return
            if res.action != ep.pending.action:
                self.log.warning(f"result for command {res.id} names action {res.action!r}, sent "
                                 f"{ep.pending.action!r}; ignored")
                return
            self.last_in_hand = res.in_hand
            ep.last_result = {"id": res.id, "action": res.action, "success": res.success, "in_hand": res.in_hand,
                              "message": res.message}
            if not res.success:
                self.log.info(f"executor: {res.action} (command {res.id}) did not succeed: {res.message}")
            done = ep.pending.action
            ep.pending = None
            ep.need_after = res.stamp
            ep.wait_since = self.clock_active.now()
            ep.trigger = t
            ep.state = "waiting_frames"
            if done == START_POSE and not res.success:
                self.finish("start_pose_failed", send_stop=True, reason=f"start_pose: {res.message}")
            elif done == "end":
                self.finish("ended", send_stop=False, reason="policy chose end")
            elif ep.step >= self.p["max_steps"]:
                self.finish("max_steps", send_stop=True, reason=f"{ep.step} steps")
        self.step()

    def cancel(self) -> tuple[bool, str]:
        with self.lock:
            if self.episode is not None and self.episode.state != "finished":
                self.finish("cancelled", send_stop=True, reason="~/cancel service")
                return True, "episode cancelled"
            self.publish_command(STOP)
            return False, "no running episode (stop sent anyway)"

    # ---------------------------------------------------------------- the step
    def step(self) -> None:
        """Advance the episode if it can: timeouts, freshness, inference, one command."""
        with self.lock:
            ep = self.episode
            if ep is None or ep.state == "finished" or self.closing:
                return
            if not self.ready:
                return  # paused: the active clock is stopped too
            now_active = self.clock_active.now()
            if ep.state == "start_pose":
                cmd = self.publish_command(START_POSE)
                ep.pending, ep.pending_since, ep.state = cmd, now_active, "waiting_result"
                self.publish_status(extra={"command_id": cmd.id})
                return
            if ep.state == "waiting_result":
                if now_active - ep.pending_since > self.p["command_timeout_s"]:
                    self.finish("timeout", send_stop=True,
                                reason=f"command {ep.pending.id} ({ep.pending.action}) not acknowledged within "
                                       f"{self.p['command_timeout_s']} s")
                return
            frames, why = self.fresh_frames(ep)
            if frames is None:
                if now_active - ep.wait_since > self.p["frame_timeout_s"]:
                    self.finish("camera_timeout", send_stop=True,
                                reason=f"no fresh frame within {self.p['frame_timeout_s']} s ({why})")
                return
            trigger = max([ep.trigger] + [f.received for f in frames.values()])
            try:
                decision = self.runner.act({k: f.image for k, f in frames.items()}, self.last_in_hand)
            except FrameError as e:
                # a frame preprocessing refuses: drop it and keep waiting for another
                with self.frame_lock:
                    for k in frames:
                        if self.frames.get(k) is frames[k]:
                            del self.frames[k]
                        self.cam_stats[k].invalid += 1
                        self.cam_stats[k].last_error = str(e)
                self.log.warning(f"frame rejected by preprocessing: {e}", throttle_duration_sec=2.0)
                return
            except Exception as e:  # noqa: BLE001
                self.log.error(f"inference failed: {e!r}")
                self.finish("error", send_stop=True, reason=f"inference failed: {e}")
                return
            if self.closing:  # shutdown gave up waiting for this inference and already sent `stop`
                return
            ep_need_after = ep.need_after
            cmd = self.publish_command(decision.action)
            t_pub = time.perf_counter()
            ep.pending, ep.pending_since, ep.state = cmd, self.clock_active.now(), "waiting_result"
            ep.step += 1
            ep.last_action = decision.action
            self.steps_total += 1
            overhead = max(0.0, (t_pub - trigger) * 1e3 - decision.latency_ms)
            if self._warm:  # the first inference warms up caches/allocator; keep it out of statistics
                self.latencies.append(decision.latency_ms)
                self.overheads.append(overhead)
            self._warm = True
            frame_age = time.time() - min(f.stamp for f in frames.values())
            self.publish_status(decision=decision, extra={
                "command_id": cmd.id, "overhead_ms": round(overhead, 3), "frame_age_ms": round(frame_age * 1e3, 2),
                "in_hand": self.last_in_hand, "after_stamp": ep_need_after,
                "frame_stamps": {k: f.stamp for k, f in frames.items()}})
            if self.p["log_steps"]:
                top = decision.top(self.actions, 3)
                self.log.info(f"ep {ep.id} step {ep.step - 1}: {decision.action:<16} "
                              + " ".join(f"{a}={p:.2f}" for a, p in top) + f"  {decision.latency_ms:.1f} ms")

    def fresh_frames(self, ep: Episode) -> tuple[dict[str, Frame] | None, str]:
        """The latest frame of every camera if each is stamped after the last result/goal and young enough,
        else (None, why not)."""
        now = time.time()
        max_age = self.p["max_frame_age_s"]
        out = {}
        with self.frame_lock:
            for spec in self.bundle.cameras:
                f = self.frames.get(spec.name)
                if f is None:
                    return None, f"no frame yet from {self.cam_stats[spec.name].topic}"
                if f.stamp <= ep.need_after:
                    return None, (f"latest {spec.name} frame is stamped {ep.need_after - f.stamp:.3f} s before "
                                  f"the last result/goal")
                age = now - f.stamp
                if age > max_age or age < -max_age:
                    return None, f"latest {spec.name} frame is {age:.3f} s old (max {max_age})"
                out[spec.name] = f
        return out, ""

    # ---------------------------------------------------------------- outputs
    def publish_command(self, action: str) -> Command:
        ep = self.episode
        cmd = Command(self._next_id, action, ep.id if ep is not None else 0)
        self._next_id += 1
        self._send_command(cmd.to_json())
        return cmd

    def finish(self, outcome: str, *, send_stop: bool, reason: str = "") -> None:
        ep = self.episode
        if ep is None or ep.state == "finished":
            return
        if send_stop:
            self.publish_command(STOP)
        ep.state, ep.outcome, ep.reason, ep.pending = "finished", outcome, reason, None
        with _inference_mode():  # the KV-cache tensors were written under inference mode
            self.runner.end_episode()
        text = f"episode {ep.id} finished after {ep.step} steps: {outcome}" + (f" ({reason})" if reason else "")
        # (rclpy refuses different severities from one call site, hence two calls)
        if outcome == "ended":
            self.log.info(text)
        else:
            self.log.warning(text)
        self.publish_status()

    def publish_status(self, state: str | None = None, decision=None, extra: dict | None = None) -> None:
        ep = self.episode
        if state is None:
            if ep is None:
                state = "idle"
            elif ep.state == "finished":
                state = "finished"
            elif not self.ready:
                state = "paused"
            else:
                state = ep.state
        st = {"stamp": time.time(), "state": state, "ready": self.ready,
              "episode": ep.id if ep else None, "goal": ep.goal if ep else None,
              "step": ep.step if ep else 0, "action": ep.last_action if ep else None,
              "outcome": ep.outcome if ep else None, "reason": ep.reason if ep else ""}
        if decision is not None:
            st["decision_step"] = decision.step
            st["latency_ms"] = round(decision.latency_ms, 3)
            st["top"] = [[a, round(p, 4)] for a, p in decision.top(self.actions, 3)]
            st["probs"] = {a: round(float(p), 4) for a, p in zip(self.actions, decision.probs)}
        silent = {s.topic: s.silent_hint for s in self.cam_stats.values() if s.silent_hint}
        if silent:
            st["silent_cameras"] = silent
        if extra:
            st.update(extra)
        self._send_status(json.dumps(st))

    # ---------------------------------------------------------------- silent cameras
    def check_silent_cameras(self, now_m: float, hint: Callable[[str, float, bool], str]) -> None:
        """Mark each camera with nothing received for camera_silent_s (since start if never): `hint(topic,
        quiet_s, ever_received)` says why (the node asks the ROS graph); logged once per silence."""
        limit = self.p["camera_silent_s"]
        for name, stats in self.cam_stats.items():
            with self.frame_lock:
                last = stats.times[-1] if stats.times else None
            quiet = now_m - (last if last is not None else self.t_start)
            if quiet < limit:
                if stats.silent_hint:
                    self.log.info(f"camera {name}: frames arrive again on {stats.topic}")
                stats.silent_hint = ""
                continue
            if stats.silent_hint:
                continue
            stats.silent_hint = hint(stats.topic, quiet, last is not None)
            self.log.error(f"camera {name}: {stats.silent_hint}")

    # ---------------------------------------------------------------- stopping
    def fail_safe(self, reason: str) -> None:
        """After an unexpected exception: end the episode (outcome error) and send `stop`."""
        got = self.lock.acquire(timeout=5.0)
        try:
            if self.episode is not None and self.episode.state != "finished":
                self.finish("error", send_stop=True, reason=reason)
            else:
                self.publish_command(STOP)
        except Exception as e:  # noqa: BLE001
            self.log.error(f"fail-safe stop failed: {e!r}")
        finally:
            if got:
                self.lock.release()

    def shutdown_stop(self, timeout: float = 5.0) -> None:
        """Send `stop` and accept nothing afterwards (no command can follow it)."""
        got = self.lock.acquire(timeout=timeout)
        try:
            self.closing = True
            if self.episode is not None and self.episode.state != "finished":
                self.finish("shutdown", send_stop=True, reason="node shutting down")
            else:
                self.publish_command(STOP)
        finally:
            if got:
                self.lock.release()
