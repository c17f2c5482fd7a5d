"""Robot executors: FLaRe discrete actions -> robot motions, behind a small driver interface.

Importing this package imports neither rclpy nor torch (the ROS backends import rclpy when constructed).
"""
from .base import (  # noqa: F401
    GRIPPER_APERTURE, JOINT_ARM, JOINT_LIFT, JOINT_WRIST_YAW, DriverError, DriverUnavailable, GripperReading,
    JointLimit, MotionInterrupted, Outcome, RobotDriver,
)
from .locobot import LocobotDriver, LocobotExecutor, LocobotParams, Pose2D  # noqa: F401
from .stretch import DEFAULT_LIMITS, Motion, Refused, StretchExecutor, StretchParams, plan_motion  # noqa: F401

__all__ = [
    "GRIPPER_APERTURE", "JOINT_ARM", "JOINT_LIFT", "JOINT_WRIST_YAW", "DriverError", "DriverUnavailable",
    "GripperReading", "JointLimit", "MotionInterrupted", "Outcome", "RobotDriver", "LocobotDriver",
    "LocobotExecutor", "LocobotParams", "Pose2D", "DEFAULT_LIMITS", "Motion", "Refused", "StretchExecutor",
    "StretchParams", "plan_motion",
]
