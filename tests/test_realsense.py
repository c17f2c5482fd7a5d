"""realsense_camera: rotation of images and intrinsics, device selection, stale frames, the clear failure
without pyrealsense2 / a device, and (real rclpy, separate process) Image + CameraInfo publishing through a
fake frame source at the node's hardware boundary."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

# keep every test-side ROS participant on loopback, like the node processes (rosproc.ros_env)
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from flare_bringup.realsense_camera import (
    CameraError, Frame, FrameGate, FrameSource, Intrinsics, camera_info_msg, image_msg, rotate_image,
    rotate_intrinsics, select_device,
)

INTR = Intrinsics(640, 480, fx=610.0, fy=605.0, cx=322.5, cy=241.0, coeffs=(0.1, -0.05, 0.002, -0.003, 0.01))


def project(intr: Intrinsics, pts: np.ndarray) -> np.ndarray:
    """plumb_bob projection of camera-frame points (N, 3) -> pixels (N, 2)."""
    x, y = pts[:, 0] / pts[:, 2], pts[:, 1] / pts[:, 2]
    k1, k2, p1, p2, k3 = intr.coeffs
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([intr.fx * xd + intr.cx, intr.fy * yd + intr.cy], axis=1)


def rotate_pixels(uv: np.ndarray, w: int, h: int, deg: int) -> np.ndarray:
    """Where np.rot90(k=deg/90) moves pixel (u, v)."""
    for _ in range(deg // 90):
        uv = np.stack([uv[:, 1], (w - 1) - uv[:, 0]], axis=1)
        w, h = h, w
    return uv


def rotate_points(pts: np.ndarray, deg: int) -> np.ndarray:
    """The camera rotated about its optical axis along with the image: (X, Y) -> (Y, -X) per quarter turn."""
    for _ in range(deg // 90):
        pts = np.stack([pts[:, 1], -pts[:, 0], pts[:, 2]], axis=1)
    return pts


@pytest.mark.parametrize("deg", [0, 90, 180, 270])
def test_rotated_intrinsics_project_like_the_rotated_image(deg):
    rng = np.random.default_rng(deg)
    pts = np.column_stack([rng.uniform(-0.5, 0.5, 200), rng.uniform(-0.4, 0.4, 200), rng.uniform(0.5, 3, 200)])
    uv = project(INTR, pts)
    rot = rotate_intrinsics(INTR, deg)
    expected = rotate_pixels(uv, INTR.width, INTR.height, deg)
    np.testing.assert_allclose(project(rot, rotate_points(pts, deg)), expected, atol=1e-9)
    if deg in (90, 270):
        assert (rot.width, rot.height) == (INTR.height, INTR.width)


def test_rotate_image_is_counter_clockwise_like_numpy_and_stretch_ai():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert rotate_image(img, 0) is img
    np.testing.assert_array_equal(rotate_image(img, 90), np.rot90(img, 1))
    # stretch_ai: STRETCH_HEAD_CAMERA_ROTATIONS = 3 counter-clockwise quarter turns
    np.testing.assert_array_equal(rotate_image(img, 270), np.rot90(img, 3))
    assert rotate_image(img, 270).shape == (3, 2, 3)
    with pytest.raises(CameraError):
        rotate_image(img, 45)


def test_select_device_by_serial_name_or_the_only_one():
    devs = [("Intel RealSense D435I", "123"), ("Intel RealSense D405", "456")]
    assert select_device(devs, serial_no="_456") == devs[1]
    assert select_device(devs, device_name="d435") == devs[0]
    assert select_device(devs[:1]) == devs[0]
    with pytest.raises(CameraError, match="set serial_no or device_name"):
        select_device(devs)
    with pytest.raises(CameraError, match="no RealSense device with serial 789; connected: Intel"):
        select_device(devs, serial_no="789")
    with pytest.raises(CameraError, match="no RealSense device connected"):
        select_device([], device_name="D405")


def test_frame_gate_drops_frames_whose_number_does_not_advance():
    g = FrameGate()
    assert [g.accept(n) for n in (5, 6, 6, 4, 7)] == [True, True, False, False, True]
    assert g.stale == 2


def test_messages():
    img = np.zeros((4, 6, 3), np.uint8)
    m = image_msg(img, "cam")
    assert (m.height, m.width, m.step, m.encoding, len(m.data)) == (4, 6, 18, "rgb8", 72)
    with pytest.raises(ValueError):
        image_msg(np.zeros((4, 6), np.uint8), "cam")
    info = camera_info_msg(rotate_intrinsics(INTR, 270), "cam")
    assert (info.width, info.height) == (480, 640)
    assert info.k[0] == INTR.fy and info.k[4] == INTR.fx and info.distortion_model == "plumb_bob"


def test_without_pyrealsense2_or_device_the_node_exits_with_a_clear_error():
    exe = shutil.which("realsense_camera", path=os.path.dirname(sys.executable))
    cmd = [exe] if exe else [sys.executable, "-m", "flare_bringup.realsense_camera"]
    env = dict(os.environ, ROS_DOMAIN_ID=str(100 + os.getpid() % 100), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    p = subprocess.run(cmd + ["--ros-args", "-p", "device_name:=D405"], capture_output=True, text=True,
                       timeout=60, env=env)
    assert p.returncode != 0
    assert ("pyrealsense2 is not installed" in p.stderr or "libusb" in p.stderr
            or "no RealSense device connected" in p.stderr), p.stderr


# ------------------------------------------------------------------------------- ROS: publishing (subprocess)
class FakeSource(FrameSource):
    """Frames 1, 2, 2 (stale repeat), 3, 4, ... of a 4x6 image whose first pixel carries the frame number."""

    description = "fake D435"

    def __init__(self):
        self.seq = iter([1, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10] + list(range(11, 10000)))

    def open(self):
        return Intrinsics(6, 4, 5.0, 6.0, 2.5, 1.5)

    def read(self, timeout_s):
        time.sleep(0.05)
        n = next(self.seq)
        img = np.zeros((4, 6, 3), np.uint8)
        img[0, 0] = n % 256
        img[3, 5] = (200, 100, 50)
        return Frame(n, time.time() - 0.1, img)  # captured 0.1 s ago


def _child():
    from flare_bringup.realsense_camera import run

    sys.exit(run(sys.argv[2:], source=FakeSource()))


@pytest.mark.ros
def test_node_publishes_rotated_image_and_camera_info_stamped_at_capture(tmp_path):
    rclpy = pytest.importorskip("rclpy")
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image

    from flare_bringup.rosproc import NodeProcess, ros_env, unique_domain_id

    domain = unique_domain_id()
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = Node("rs_test_listener", context=ctx)
    images, infos = [], []
    node.create_subscription(Image, "/camera/color/image_raw", lambda m: images.append((time.time(), m)), 50)
    node.create_subscription(CameraInfo, "/camera/color/camera_info", lambda m: infos.append(m), 50)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    proc = NodeProcess("realsense_camera", [sys.executable, __file__, "--child", "--ros-args", "-r",
                                            "__node:=camera", "-p", "rotation_deg:=270"],
                       ros_env(domain), tmp_path)
    try:
        end = time.monotonic() + 20
        while len(images) < 8 and time.monotonic() < end and proc.alive():
            ex.spin_once(timeout_sec=0.05)
    finally:
        code = proc.stop()
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    out = proc.output()
    assert len(images) >= 8, out
    assert code == 0, out
    first = images[0][1]
    assert (first.height, first.width, first.encoding) == (6, 4, "rgb8")
    arr = [np.frombuffer(bytes(m.data), np.uint8).reshape(m.height, m.width, 3) for _, m in images]
    # pixel (0, 0) of the unrotated frame is at (0, W_rot-1) ... find it via np.rot90 of a marker image
    marker = np.zeros((4, 6), np.int64)
    marker[0, 0] = 1
    r, c = np.argwhere(np.rot90(marker, 3) == 1)[0]
    numbers = [int(a[r, c, 0]) for a in arr]
    assert len(set(numbers)) == len(numbers), numbers  # the stale repeat of frame 2 was dropped
    marker[:] = 0
    marker[3, 5] = 1
    r2, c2 = np.argwhere(np.rot90(marker, 3) == 1)[0]
    assert tuple(arr[0][r2, c2]) == (200, 100, 50)
    assert "stale frame" in out
    for recv, m in images:
        stamp = m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
        assert 0.05 < recv - stamp < 0.6  # stamped at capture (0.1 s before publishing), not at receipt
    info = infos[0]
    assert (info.width, info.height) == (4, 6)
    assert info.k[0] == 6.0 and info.k[4] == 5.0  # fx/fy swapped by the quarter turn
    assert info.k[2] == 1.5 and info.k[5] == 2.5  # cx' = cy; cy' = cx for k=3


if __name__ == "__main__" and "--child" in sys.argv:
    _child()
