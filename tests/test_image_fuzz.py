"""Property-based fuzz of sensor_msgs/Image handling.

* In-process (fast, >= 1k examples): the node's message -> array validation (`flare_policy.episode.frame_from_msg`)
  either returns exactly the pixels the message describes or raises FrameError -- never anything else -- and
  every frame it accepts also passes the training preprocessing (so the node never acts on a frame that
  preprocessing would refuse).
* Over real ROS (a smaller batch): invalid frames sent to a live policy node never produce a command and
  do not crash it; a valid frame afterwards still does.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from flare_policy.bundle import flare_camera, sim_camera  # noqa: E402
from flare_policy.episode import MIN_SIDE, frame_from_msg  # noqa: E402
from flare_policy.preprocess import FrameError, prepare_frame  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

N_EXAMPLES = 1200
MAX_DATA = 60_000

ENCODINGS = ["rgb8", "bgr8", "mono8", "mono16", "rgba8", "bgra8", "8UC3", "32FC3", "16UC3", "RGB8", "", "yuv422",
             "bayer_rggb8", "rgb8 ", "jpeg"]


@st.composite
def image_msgs(draw):
    enc = draw(st.one_of(st.sampled_from(ENCODINGS), st.sampled_from(["rgb8", "bgr8"]),
                         st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=10)))
    small = st.integers(0, 90)
    h = draw(st.one_of(small, small, st.integers(0, 2**32 - 1)))
    w = draw(st.one_of(small, small, st.integers(0, 2**32 - 1)))
    step = draw(st.one_of(st.just(w * 3), st.just(w * 3), st.integers(w * 3, w * 3 + 16), st.integers(0, 2**32 - 1)))
    step = min(step, 2**32 - 1)
    exact = step * h
    if exact <= MAX_DATA:
        n = draw(st.one_of(st.just(exact), st.just(exact), st.integers(max(0, exact - 8), exact + 8),
                           st.integers(0, MAX_DATA)))
    else:
        n = draw(st.integers(0, 2048))
    data = draw(st.binary(min_size=n, max_size=n)) if n <= 256 else np.random.default_rng(n).integers(
        0, 256, n, dtype=np.uint8).tobytes()
    sec = draw(st.one_of(st.integers(1_600_000_000, 1_900_000_000), st.integers(-2**31, 2**31 - 1), st.just(0)))
    nsec = draw(st.one_of(st.integers(0, 999_999_999), st.integers(0, 2**32 - 1), st.just(0)))
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nsec
    msg.height, msg.width, msg.step, msg.encoding = h, w, step, enc
    msg.data = data
    return msg


def expected_valid(m) -> bool:
    s = m.header.stamp
    stamp_ok = s.sec >= 0 and not (s.sec == 0 and s.nanosec == 0) and s.nanosec < 1_000_000_000
    return (m.encoding in ("rgb8", "bgr8") and MIN_SIDE <= m.height <= 8192 and MIN_SIDE <= m.width <= 8192
            and m.step >= 3 * m.width and len(m.data) == m.step * m.height and stamp_ok)


@settings(max_examples=N_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(image_msgs())
def test_frame_validation_fuzz(msg):
    try:
        img, stamp = frame_from_msg(msg)
    except FrameError:
        assert not expected_valid(msg), "a valid frame was rejected"
        return
    assert expected_valid(msg), "an invalid frame was accepted"
    assert img.dtype == np.uint8 and img.shape == (msg.height, msg.width, 3)
    raw = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, : msg.width * 3]
    raw = raw.reshape(msg.height, msg.width, 3)
    np.testing.assert_array_equal(img, raw if msg.encoding == "rgb8" else raw[..., ::-1])
    assert stamp == pytest.approx(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
    # whatever the callback accepts, preprocessing accepts too (sim and FLaRe geometry, any rotation)
    for spec, rot in ((sim_camera(), 0), (flare_camera("raw_navigation_camera"), 270)):
        out = prepare_frame(img, spec, rot)
        assert out.shape == spec.input_shape and out.dtype == np.uint8


def test_float_frames_with_nan_are_rejected():
    msg = Image()
    msg.header.stamp.sec = 1_700_000_000
    msg.height, msg.width, msg.encoding, msg.step = 16, 16, "32FC3", 16 * 12
    msg.data = np.full((16, 16, 3), np.nan, np.float32).tobytes()
    with pytest.raises(FrameError, match="encoding"):
        frame_from_msg(msg)


def _invalid_batch(n: int, seed: int = 0) -> list:
    """n invalid messages: a valid 56x56 frame with one random defect each."""
    from ros_helpers import make_image

    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        kind = rng.integers(0, 8)
        if kind == 0:
            m = make_image(encoding=str(rng.choice(["mono8", "rgba8", "32FC3", "", "RGB8", "16UC3"])))
        elif kind == 1:
            m = make_image(data=bytes(rng.integers(0, 256, int(rng.integers(0, 56 * 168)), dtype=np.uint8)))
        elif kind == 2:
            m = make_image(step=int(rng.integers(0, 168)))
        elif kind == 3:
            m = make_image(h=int(rng.integers(0, MIN_SIDE)), w=int(rng.integers(0, 60)))
        elif kind == 4:
            m = make_image(stamp=0.0)
        elif kind == 5:
            m = make_image(h=int(rng.integers(9000, 2**31)), w=56, data=b"\x00" * 100)
        elif kind == 6:
            m = make_image()
            m.header.stamp.nanosec = int(rng.integers(1_000_000_000, 2**32))
        else:
            m = make_image(step=200)  # step*height != len(data)
        try:
            frame_from_msg(m)
        except FrameError:
            out.append(m)
    return out


@pytest.mark.ros
def test_invalid_frames_over_ros_never_command(tmp_path):
    from ros_helpers import Harness, new_domain, policy_node, tiny_bundle

    domain, env = new_domain()
    proc = policy_node("policy_node", tiny_bundle(tmp_path), env, tmp_path, frame_timeout_s=60.0)
    h = Harness(domain)
    try:
        assert h.wait_subscribers(h.goal_pub, timeout=60), proc.output()[-3000:]
        assert h.wait_subscribers(h.image_pub, timeout=10)
        h.publish_ready(True)
        ep = h.start_episode("find the red ball")
        batch = _invalid_batch(200)
        for m in batch:
            h.publish_frame(msg=m)
            time.sleep(0.002)
        time.sleep(1.0)
        assert h.commands == [], "a command was sent from invalid frames"
        assert proc.alive(), proc.output()[-3000:]
        assert h.publish_frames_until(lambda: len(h.episode_commands(ep)) >= 1, 15), \
            "the node no longer acts on valid frames"
        assert len(h.episode_commands(ep)) == 1, "one command at a time: the harness never acknowledged it"

        def invalid_count():
            vals = [int(kv.value) for m in h.diagnostics for s in m.status for kv in s.values if kv.key == "invalid"]
            return max(vals) if vals else 0
        # sensor-data QoS (best effort, depth 1) drops most of a 2 ms burst by design; the ones that reach the
        # node must be counted
        assert h.wait(lambda: invalid_count() >= 1, 15), f"diagnostics counted {invalid_count()} invalid frames"
    finally:
        h.close()
        rc = proc.stop()
    assert rc == 0 and "Traceback" not in proc.output()
