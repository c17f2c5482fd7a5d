"""LoCoBot backend over ROS 2 (Interbotix `xslocobot_control`, Create 3 base).

* Base: geometry_msgs/Twist on `cmd_vel_topic` (default `/locobot/mobile_base/cmd_vel`; a Kobuki base uses
  `/locobot/commands/velocity`), odometry (nav_msgs/Odometry) from `odom_topic`, subscribed best effort so
  it matches reliable and best-effort publishers alike.
* Camera tilt: `tilt_interface`:
    - `interbotix`: interbotix_xs_msgs/JointSingleCommand(name=`tilt_joint`, cmd=rad) on `tilt_command_topic`
      (import-guarded: a clear error when interbotix_xs_msgs is not importable). The tilt position is read
      from `joint_states_topic` when available.
    - `fake`: remembers the commanded angle (dry runs, tests).
    - `none`: look_up / look_down are refused with a clear message.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, fields
from typing import Optional

from .base import DriverUnavailable, MotionInterrupted
from .locobot import LocobotDriver, Pose2D

TILT_INTERFACES = ("interbotix", "fake", "none")


@dataclass
class LocobotBackendConfig:
    cmd_vel_topic: str = "/locobot/mobile_base/cmd_vel"
    odom_topic: str = "/locobot/mobile_base/odom"
    joint_states_topic: str = "/locobot/dynamixel/joint_states"
    tilt_interface: str = "interbotix"
    tilt_command_topic: str = "/locobot/commands/joint_single"
    tilt_joint: str = "tilt"
    tilt_tolerance_rad: float = 0.03
    tilt_timeout_s: float = 2.0
    tilt_settle_s: float = 0.5  # wait after a tilt command when no joint states are available

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def yaw_from_quaternion(x: float, y: float, z: float, w: float) -> float:
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


class LocobotRosBackend(LocobotDriver):
    name = "ros"

    def __init__(self, node, config: Optional[LocobotBackendConfig] = None, callback_group=None):
        from geometry_msgs.msg import Twist
        from nav_msgs.msg import Odometry
        from rclpy.callback_groups import ReentrantCallbackGroup
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import JointState

        self.node = node
        self.cfg = config or LocobotBackendConfig()
        if self.cfg.tilt_interface not in TILT_INTERFACES:
            raise ValueError(f"tilt_interface must be one of {TILT_INTERFACES}, got {self.cfg.tilt_interface!r}")
        self._Twist = Twist
        self._cbg = callback_group or ReentrantCallbackGroup()
        self._lock = threading.Lock()
        self._odom: Optional[Pose2D] = None
        self._tilt_measured: Optional[float] = None
        self._tilt_commanded: Optional[float] = None
        self._halt = threading.Event()
        self._tilt_pub = None
        self._tilt_msg = None
        self._pub = node.create_publisher(Twist, self.cfg.cmd_vel_topic, 1)
        node.create_subscription(Odometry, self.cfg.odom_topic, self._on_odom, qos_profile_sensor_data,
                                 callback_group=self._cbg)
        if self.cfg.joint_states_topic and self.cfg.tilt_interface == "interbotix":
            node.create_subscription(JointState, self.cfg.joint_states_topic, self._on_joint_states,
                                     qos_profile_sensor_data, callback_group=self._cbg)

    def start(self, timeout_s: float = 10.0) -> None:
        if self.cfg.tilt_interface == "interbotix":
            try:
                from interbotix_xs_msgs.msg import JointSingleCommand
            except ImportError as e:
                raise DriverUnavailable(
                    "tilt_interface 'interbotix' needs interbotix_xs_msgs (JointSingleCommand), which is not "
                    "importable: source the Interbotix workspace (interbotix_ros_core, humble), or run with "
                    "tilt_interface:=none (look_up/look_down refused) or tilt_interface:=fake (dry run)") from e
            self._tilt_msg = JointSingleCommand
            self._tilt_pub = self.node.create_publisher(JointSingleCommand, self.cfg.tilt_command_topic, 10)

    # -- callbacks ----------------------------------------------------------------------------------------
    def _on_odom(self, msg) -> None:
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        pose = Pose2D(p.x, p.y, yaw_from_quaternion(q.x, q.y, q.z, q.w), time.monotonic())
        with self._lock:
            self._odom = pose

    def _on_joint_states(self, msg) -> None:
        for n, pos in zip(msg.name, msg.position):
            if n == self.cfg.tilt_joint:
                self._tilt_measured = float(pos)

    # -- LocobotDriver ------------------------------------------------------------------------------------
    def is_ready(self) -> tuple[bool, str]:
        with self._lock:
            o = self._odom
        if o is None:
            return False, f"no odometry on {self.cfg.odom_topic} yet (is the base driver running?)"
        age = time.monotonic() - o.stamp
        if age > 2.0:
            return False, f"odometry on {self.cfg.odom_topic} is stale ({age:.1f} s)"
        return True, ""

    def publish_velocity(self, linear_x: float, angular_z: float) -> None:
        t = self._Twist()
        t.linear.x = float(linear_x)
        t.angular.z = float(angular_z)
        self._pub.publish(t)

    def odometry(self) -> Optional[Pose2D]:
        with self._lock:
            return self._odom

    def has_tilt(self) -> tuple[bool, str]:
        if self.cfg.tilt_interface == "none":
            return False, "no camera tilt interface (tilt_interface is 'none')"
        return True, ""

    def tilt_position(self) -> Optional[float]:
        if self._tilt_measured is not None:
            return self._tilt_measured
        return self._tilt_commanded

    def tilt_to(self, radians: float) -> None:
        self._halt.clear()
        self._tilt_commanded = radians
        if self.cfg.tilt_interface == "fake":
            self.node.get_logger().info(f"fake tilt: {radians:.3f} rad")
            return
        if self._tilt_pub is None:
            raise DriverUnavailable("tilt interface not started")
        msg = self._tilt_msg()
        msg.name = self.cfg.tilt_joint
        msg.cmd = float(radians)
        self._tilt_pub.publish(msg)
        deadline = time.monotonic() + (self.cfg.tilt_timeout_s if self._tilt_measured is not None
                                       else self.cfg.tilt_settle_s)
        while time.monotonic() < deadline:
            if self._halt.wait(0.02):
                raise MotionInterrupted("halted")
            m = self._tilt_measured
            if m is not None and abs(m - radians) <= self.cfg.tilt_tolerance_rad:
                return

    def stop(self) -> None:
        self._halt.set()
        for _ in range(3):
            self.publish_velocity(0.0, 0.0)

    def close(self) -> None:
        try:
            self.publish_velocity(0.0, 0.0)
        except Exception:
            pass
