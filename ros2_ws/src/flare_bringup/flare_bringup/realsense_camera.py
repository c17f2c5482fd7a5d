"""`realsense_camera`: one RealSense colour stream -> sensor_msgs/Image (rgb8) + CameraInfo, via pyrealsense2.

An alternative to realsense-ros (`realsense2_camera`) when that driver misbehaves or is not installed:

* Device: `serial_no` (realsense-ros style `_123...` accepted), else the first device whose name contains
  `device_name` (e.g. `D435` for the Stretch head, `D405` for the gripper camera), else the only device.
* Stream: colour `width` x `height` @ `fps`, rgb8. (The D405 has no RGB module; its colour stream comes from
  the depth module, which pyrealsense2 resolves by itself.)
* `rotation_deg` (0/90/180/270, counter-clockwise, = numpy.rot90 k = deg/90): the Stretch head D435i is
  mounted sideways; stretch_ai applies 3 counter-clockwise quarter turns, i.e. rotation_deg 270. The
  CameraInfo (size, K, P, distortion) is rotated consistently. If this node rotates, the policy must not
  rotate again (`rotate_navigation_camera: 0` in the policy YAML).
* Stamps: capture time (the frame's system/global timestamp mapped onto the node clock), receipt time when the
  frame only has a hardware-clock stamp. Frames whose frame number does not advance are stale: warned, dropped.
* Without pyrealsense2, or without a matching device, it exits non-zero with a clear message.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image

ROTATIONS = (0, 90, 180, 270)


class CameraError(RuntimeError):
    """The camera cannot be used (library missing, no device, bad configuration); the message says why."""


@dataclass(frozen=True)
class Intrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    model: str = "plumb_bob"
    coeffs: tuple = (0.0, 0.0, 0.0, 0.0, 0.0)  # k1, k2, p1, p2, k3 (OpenCV / ROS plumb_bob order)


@dataclass(frozen=True)
class Frame:
    number: int
    timestamp_s: Optional[float]  # host epoch seconds if the device clock is host-synchronised, else None
    rgb: np.ndarray               # (H, W, 3) uint8, unrotated


# ---------------------------------------------------------------------------------------------- pure helpers
def check_rotation(deg: int) -> int:
    if deg not in ROTATIONS:
        raise CameraError(f"rotation_deg must be one of {ROTATIONS} (counter-clockwise), got {deg}")
    return deg


def rotate_image(img: np.ndarray, deg: int) -> np.ndarray:
    """Rotate counter-clockwise by deg (numpy.rot90 with k = deg / 90)."""
    k = check_rotation(deg) // 90
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


def rotate_intrinsics(intr: Intrinsics, deg: int) -> Intrinsics:
    """Intrinsics of the image rotated counter-clockwise by deg (same convention as rotate_image).

    np.rot90(k=1) maps pixel (u, v) of a W-wide image to (v, W-1-u); the camera is rotated about its optical
    axis, so focal lengths swap, the principal point moves with the pixels, radial distortion is unchanged and
    the tangential terms rotate: (p1, p2) -> (-p2, p1).
    """
    out = intr
    for _ in range(check_rotation(deg) // 90):
        k1, k2, p1, p2, k3, *rest = list(out.coeffs) + [0.0] * max(0, 5 - len(out.coeffs))
        coeffs = (k1, k2, -p2, p1, k3, *rest) if out.model == "plumb_bob" else tuple(out.coeffs)
        out = Intrinsics(width=out.height, height=out.width, fx=out.fy, fy=out.fx, cx=out.cy,
                         cy=(out.width - 1) - out.cx, model=out.model, coeffs=coeffs)
    return out


def select_device(devices: list[tuple[str, str]], serial_no: str = "", device_name: str = "") -> tuple[str, str]:
    """Pick (name, serial) from the connected devices; raise CameraError saying what is connected."""
    serial_no = serial_no.strip().lstrip("_")
    found = ", ".join(f"{n} (serial {s})" for n, s in devices) or "none"
    if not devices:
        raise CameraError("no RealSense device connected (check the USB cable, `rs-enumerate-devices`, and in a "
                          "container: /dev mounted and device_cgroup_rules 'c 81:* rmw', 'c 189:* rmw')")
    if serial_no:
        for n, s in devices:
            if s == serial_no:
                return n, s
        raise CameraError(f"no RealSense device with serial {serial_no}; connected: {found}")
    if device_name:
        for n, s in devices:
            if device_name.lower() in n.lower():
                return n, s
        raise CameraError(f"no RealSense device whose name contains {device_name!r}; connected: {found}")
    if len(devices) > 1:
        raise CameraError(f"{len(devices)} RealSense devices connected ({found}): set serial_no or device_name")
    return devices[0]


class FrameGate:
    """Accepts only frames whose number advances (librealsense can hand out the same frame again)."""

    def __init__(self):
        self.last: Optional[int] = None
        self.stale = 0

    def accept(self, number: int) -> bool:
        if self.last is not None and number <= self.last:
            self.stale += 1
            return False
        self.last = number
        return True


def camera_info_msg(intr: Intrinsics, frame_id: str, stamp=None):
    from sensor_msgs.msg import CameraInfo

    m = CameraInfo()
    if stamp is not None:
        m.header.stamp = stamp
    m.header.frame_id = frame_id
    m.width, m.height = int(intr.width), int(intr.height)
    m.distortion_model = intr.model
    m.d = [float(c) for c in intr.coeffs]
    m.k = [intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0]
    m.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    m.p = [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return m


def image_msg(rgb: np.ndarray, frame_id: str, stamp=None):
    from sensor_msgs.msg import Image

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8, got {rgb.dtype} {rgb.shape}")
    m = Image()
    if stamp is not None:
        m.header.stamp = stamp
    m.header.frame_id = frame_id
    m.height, m.width = int(rgb.shape[0]), int(rgb.shape[1])
    m.encoding = "rgb8"
    m.is_bigendian = 0
    m.step = m.width * 3
    m.data = np.ascontiguousarray(rgb).tobytes()
    return m


# ---------------------------------------------------------------------------------------------- frame sources
class FrameSource:
    """Where frames come from (the hardware boundary of this node)."""

    description = "frame source"

    def open(self) -> Intrinsics:
        raise NotImplementedError

    def read(self, timeout_s: float) -> Optional[Frame]:
        """Next frame, or None on timeout."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def import_pyrealsense2():
    try:
        import pyrealsense2 as rs
    except ImportError as e:
        if "libusb" in str(e):
            raise CameraError(f"pyrealsense2 cannot load libusb ({e}): install the Debian package libusb-1.0-0 "
                              "(`sudo apt install libusb-1.0-0`)") from e
        raise CameraError("pyrealsense2 is not installed: `pip install pyrealsense2` (it needs the Debian "
                          "package libusb-1.0-0), or use the realsense-ros driver instead "
                          "(camera_driver:=realsense2_camera in the launch files)") from e
    return rs


_DISTORTION = {"brown_conrady": "plumb_bob", "inverse_brown_conrady": "plumb_bob",
               "modified_brown_conrady": "plumb_bob", "none": "plumb_bob",
               "kannala_brandt4": "equidistant", "ftheta": "equidistant"}


class RealSenseSource(FrameSource):
    def __init__(self, serial_no: str = "", device_name: str = "", width: int = 1280, height: int = 720,
                 fps: int = 15):
        self.rs = import_pyrealsense2()
        self.serial_no, self.device_name = serial_no, device_name
        self.width, self.height, self.fps = width, height, fps
        self.pipeline = None
        self.description = "RealSense"

    def open(self) -> Intrinsics:
        rs = self.rs
        ctx = rs.context()
        devices = []
        for d in ctx.query_devices():
            try:
                devices.append((d.get_info(rs.camera_info.name), d.get_info(rs.camera_info.serial_number)))
            except RuntimeError:
                continue
        name, serial = select_device(devices, self.serial_no, self.device_name)
        self.description = f"{name} (serial {serial})"
        cfg = rs.config()
        cfg.enable_device(serial)
        cfg.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
        pipeline = rs.pipeline(ctx)
        try:
            profile = pipeline.start(cfg)
        except RuntimeError as e:
            raise CameraError(f"{self.description}: cannot start colour {self.width}x{self.height}@{self.fps} "
                              f"rgb8: {e}") from e
        self.pipeline = pipeline
        vi = profile.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
        model = _DISTORTION.get(str(vi.model).split(".")[-1], "plumb_bob")
        coeffs = tuple(float(c) for c in vi.coeffs)
        if model == "plumb_bob":  # librealsense order k1, k2, p1, p2, k3 = ROS plumb_bob order
            coeffs = (coeffs + (0.0,) * 5)[:5]
        return Intrinsics(vi.width, vi.height, vi.fx, vi.fy, vi.ppx, vi.ppy, model, coeffs)

    def read(self, timeout_s: float) -> Optional[Frame]:
        rs = self.rs
        try:
            frames = self.pipeline.wait_for_frames(int(timeout_s * 1000))
        except RuntimeError:
            return None
        color = frames.get_color_frame()
        if not color:
            return None
        ts = None
        if color.get_frame_timestamp_domain() in (rs.timestamp_domain.system_time, rs.timestamp_domain.global_time):
            ts = color.get_timestamp() / 1000.0
        return Frame(int(color.get_frame_number()), ts, np.asanyarray(color.get_data()).copy())

    def close(self) -> None:
        if self.pipeline is not None:
            try:
                self.pipeline.stop()
            except RuntimeError:
                pass
            self.pipeline = None


# ---------------------------------------------------------------------------------------------- the node
class RealSenseCameraNode(Node):
    def __init__(self, source: Optional[FrameSource] = None, node_name: str = "realsense_camera"):
        super().__init__(node_name)

        def p(name, default, description):
            return self.declare_parameter(name, default, ParameterDescriptor(description=description,
                                                                             read_only=True)).value

        self.serial_no = str(p("serial_no", "", "Device serial number ('' = any; '_123' accepted)"))
        self.device_name = p("device_name", "", "Substring of the device name, e.g. D435 or D405 ('' = any)")
        self.width = p("width", 1280, "Colour stream width (px)")
        self.height = p("height", 720, "Colour stream height (px)")
        self.fps = p("fps", 15, "Colour stream rate (Hz)")
        self.rotation_deg = check_rotation(p("rotation_deg", 0, "Counter-clockwise rotation applied to "
                                                                 "images and CameraInfo: 0, 90, 180, 270 "
                                                                 "(Stretch head D435i: 270)"))
        self.frame_id = p("frame_id", "camera_color_optical_frame", "header.frame_id of Image and CameraInfo")
        self.image_topic = p("image_topic", "~/color/image_raw", "sensor_msgs/Image output (rgb8)")
        self.info_topic = p("camera_info_topic", "~/color/camera_info", "sensor_msgs/CameraInfo output")
        best_effort = p("best_effort", False, "Publish best effort instead of reliable (driver default)")
        self.frame_timeout_s = p("frame_timeout_s", 1.0, "Wait for one frame at most this long (s)")
        self.max_timeouts = p("max_consecutive_timeouts", 10, "Exit with an error after this many "
                                                                "consecutive frame timeouts")
        self.source = source or RealSenseSource(self.serial_no, self.device_name, self.width, self.height,
                                                self.fps)
        raw = self.source.open()  # CameraError propagates to main()
        self.intrinsics = rotate_intrinsics(raw, self.rotation_deg)
        qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE)
        self.image_pub = self.create_publisher(Image, self.image_topic, qos)
        self.info_pub = self.create_publisher(CameraInfo, self.info_topic, qos)
        self.gate = FrameGate()
        self.published = 0
        self.failed: Optional[str] = None
        self._stop = threading.Event()
        self._last_stale_warn = 0.0
        self._thread = threading.Thread(target=self._loop, name="capture", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"{self.source.description}: colour {raw.width}x{raw.height}@{self.fps} -> "
            f"{self.image_pub.topic_name} ({self.intrinsics.width}x{self.intrinsics.height}, rotated "
            f"{self.rotation_deg} deg counter-clockwise) + {self.info_pub.topic_name}")

    def _stamp(self, frame: Frame):
        now = self.get_clock().now()
        if frame.timestamp_s is not None:
            age = time.time() - frame.timestamp_s
            if 0.0 <= age < 1.0:  # plausible host-synchronised capture time
                return Time(nanoseconds=now.nanoseconds - int(age * 1e9), clock_type=now.clock_type).to_msg()
        return now.to_msg()

    def _loop(self) -> None:
        timeouts = 0
        while not self._stop.is_set():
            frame = self.source.read(self.frame_timeout_s)
            if frame is None:
                timeouts += 1
                self.get_logger().warning(f"no frame for {self.frame_timeout_s:.1f} s ({timeouts} in a row)")
                if timeouts >= self.max_timeouts:
                    self.failed = f"{self.source.description}: no frames for {timeouts} timeouts in a row"
                    self._stop.set()
                continue
            timeouts = 0
            if not self.gate.accept(frame.number):
                now = time.monotonic()
                if now - self._last_stale_warn > 2.0:
                    self._last_stale_warn = now
                    self.get_logger().warning(
                        f"stale frame {frame.number} (last {self.gate.last}) dropped; {self.gate.stale} so far")
                continue
            stamp = self._stamp(frame)
            try:
                img = image_msg(rotate_image(frame.rgb, self.rotation_deg), self.frame_id, stamp)
            except ValueError as e:
                self.get_logger().warning(f"bad frame {frame.number} dropped: {e}")
                continue
            self.image_pub.publish(img)
            self.info_pub.publish(camera_info_msg(self.intrinsics, self.frame_id, stamp))
            self.published += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0 + self.frame_timeout_s)
        self.source.close()


def run(args=None, source: Optional[FrameSource] = None) -> int:
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        node = RealSenseCameraNode(source=source)
    except CameraError as e:
        print(f"[realsense_camera] ERROR: {e}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    code = 0
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
            if node.failed:
                print(f"[realsense_camera] ERROR: {node.failed}", file=sys.stderr, flush=True)
                code = 1
                break
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return code


def main(args=None) -> None:
    sys.exit(run(args))


if __name__ == "__main__":
    main()
