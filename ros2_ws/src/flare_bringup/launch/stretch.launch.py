"""FLaRe on a Hello Robot Stretch RE1: executor + policy (+ stretch_driver, + cameras).

    ros2 launch flare_bringup stretch.launch.py bundle:=/models/stretch_flare                 # stretch_driver
    ros2 launch flare_bringup stretch.launch.py bundle:=/models/stretch_flare backend:=body    # stretch_body
    ros2 launch flare_bringup stretch.launch.py bundle:=... backend:=fake cameras:=false      # dry run
    ros2 topic pub --once /flare/goal std_msgs/msg/String "{data: 'find a mug'}"

backend:=driver starts (start_driver:=true) stretch_core's stretch_driver.launch.py in position mode, and the
executor drives it through its trajectory action. backend:=body drives the robot directly with stretch_body,
which cannot run next to stretch_driver (both take stretch_body's robot lock), so no driver is started then.

Cameras (cameras:=true): camera_driver:=realsense2_camera starts realsense-ros (>= 4.55) for the head D435i
(`/camera/color/image_raw`) and, with manipulation_camera:=true, a gripper D405
(`/gripper_camera/color/image_rect_raw`: the D405 has no RGB module). A stock RE1 has no D405, so
manipulation_camera defaults to false, and the policy then gets the head camera's frames as its manipulation
view too -- what FLaRe's simulator does when its manipulation camera is off (environment/stretch_controller.py
manipulation_camera in JiahengHu/FLaRe). Navigation works so; for manipulation tasks mount a D405 on the
gripper (as on a Stretch 3) and pass manipulation_camera:=true. The head camera is mounted sideways: the
policy rotates its frames 270 deg counter-clockwise (stretch_ai's 3 quarter turns). camera_driver:=flare uses
this package's pyrealsense2 `realsense_camera` instead, which rotates the image itself, so the policy does not.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, LogInfo, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

HEAD_ROTATION_DEG = 270  # Stretch head D435i: 3 counter-clockwise quarter turns (stretch_ai)


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _launch_setup(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    share = get_package_share_directory("flare_bringup")
    backend = arg("backend")
    if backend not in ("driver", "body", "fake"):
        raise RuntimeError(f"backend must be driver, body or fake, got {backend!r}")
    cameras, camera_driver = _truthy(arg("cameras")), arg("camera_driver")
    if camera_driver not in ("realsense2_camera", "flare"):
        raise RuntimeError(f"camera_driver must be realsense2_camera or flare, got {camera_driver!r}")
    manipulation = _truthy(arg("manipulation_camera"))
    nav_topic, manip_topic = arg("navigation_camera_topic"), arg("manipulation_camera_topic")
    topics = {"command_topic": arg("command_topic"), "result_topic": arg("result_topic"),
              "ready_topic": arg("ready_topic")}
    actions = []

    # -- robot driver ----------------------------------------------------------------------------------
    if backend == "driver" and _truthy(arg("start_driver")):
        actions.append(IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(get_package_share_directory("stretch_core"), "launch",
                                                       "stretch_driver.launch.py")),
            launch_arguments={"mode": "position", "broadcast_odom_tf": "True"}.items()))
    elif backend == "body":
        actions.append(LogInfo(msg="backend:=body drives the robot with stretch_body: make sure stretch_driver "
                                   "is NOT running (it holds the robot lock)"))

    actions.append(Node(
        package="flare_bringup", executable="stretch_executor", name="stretch_executor", output="screen",
        emulate_tty=True,
        parameters=[arg("executor_config") or os.path.join(share, "config", "executor_stretch.yaml"),
                    dict(backend=backend, **topics)],
        arguments=["--ros-args", "--log-level", arg("log_level")]))

    # -- cameras -----------------------------------------------------------------------------------------
    nav_rotation = HEAD_ROTATION_DEG
    if cameras and camera_driver == "realsense2_camera":
        rs_config = arg("realsense_config") or os.path.join(share, "config", "realsense2_stretch.yaml")
        actions.append(Node(
            package="realsense2_camera", executable="realsense2_camera_node", name="camera", namespace="",
            output="screen", parameters=[rs_config, {"serial_no": arg("head_camera_serial")}],
            remappings=[("~/color/image_raw", nav_topic)]))
        if manipulation:
            actions.append(Node(
                package="realsense2_camera", executable="realsense2_camera_node", name="gripper_camera",
                namespace="", output="screen",
                parameters=[rs_config, {"serial_no": arg("gripper_camera_serial")}],
                remappings=[("~/color/image_rect_raw", manip_topic)]))
    elif cameras and camera_driver == "flare":
        cam_config = arg("camera_config") or os.path.join(share, "config", "cameras_stretch.yaml")
        nav_rotation = 0  # realsense_camera publishes upright frames
        actions.append(Node(
            package="flare_bringup", executable="realsense_camera", name="head_camera", output="screen",
            parameters=[cam_config, {"serial_no": arg("head_camera_serial"), "image_topic": nav_topic,
                                     "rotation_deg": HEAD_ROTATION_DEG}]))
        if manipulation:
            actions.append(Node(
                package="flare_bringup", executable="realsense_camera", name="gripper_camera", output="screen",
                parameters=[cam_config, {"serial_no": arg("gripper_camera_serial"), "image_topic": manip_topic}]))
    if arg("navigation_camera_rotation") != "auto":
        nav_rotation = int(arg("navigation_camera_rotation"))
    manip_rotation = 0
    if not manipulation:
        # no gripper camera: the head frames stand in for the manipulation view (FLaRe's own fallback)
        manip_topic, manip_rotation = nav_topic, nav_rotation
        actions.append(LogInfo(msg="manipulation_camera:=false: the policy's manipulation view is the head camera "
                                   f"({nav_topic}); mount a gripper D405 and pass manipulation_camera:=true for "
                                   "manipulation tasks"))

    # -- policy ------------------------------------------------------------------------------------------
    if _truthy(arg("use_policy")):
        if not arg("bundle"):
            raise RuntimeError("bundle:=<policy bundle directory> is required (or use_policy:=false)")
        actions.append(Node(
            package="flare_policy", executable="policy_node", name="policy_node", output="screen",
            emulate_tty=True,
            parameters=[arg("policy_config") or os.path.join(share, "config", "policy_stretch.yaml"),
                        dict(bundle=arg("bundle"), device=arg("device"), goal_topic=arg("goal_topic"),
                             navigation_camera_topic=nav_topic, manipulation_camera_topic=manip_topic,
                             navigation_camera_rotation=nav_rotation, manipulation_camera_rotation=manip_rotation,
                             **topics)],
            arguments=["--ros-args", "--log-level", arg("log_level")]))
    return actions


def generate_launch_description():
    args = [
        DeclareLaunchArgument("bundle", default_value="", description="Policy bundle directory (required "
                              "unless use_policy:=false)"),
        DeclareLaunchArgument("backend", default_value="driver", choices=["driver", "body", "fake"],
                              description="driver: stretch_driver (ROS 2); body: stretch_body directly (no "
                                          "stretch_driver!); fake: dry run without hardware"),
        DeclareLaunchArgument("start_driver", default_value="true", choices=["true", "false"],
                              description="With backend:=driver, include stretch_core's stretch_driver.launch.py "
                                          "(false if it already runs)"),
        DeclareLaunchArgument("use_policy", default_value="true", choices=["true", "false"],
                              description="Start the policy node here (false: run it on another machine)"),
        DeclareLaunchArgument("device", default_value="cpu", description="torch device of the policy (cpu, cuda)"),
        DeclareLaunchArgument("cameras", default_value="true", choices=["true", "false"],
                              description="Start the camera drivers"),
        DeclareLaunchArgument("camera_driver", default_value="realsense2_camera",
                              choices=["realsense2_camera", "flare"],
                              description="realsense2_camera (realsense-ros >= 4.55) or flare (pyrealsense2 "
                                          "realsense_camera of this package)"),
        DeclareLaunchArgument("manipulation_camera", default_value="false", choices=["true", "false"],
                              description="A gripper D405 is mounted (an add-on on the RE1). false: the head "
                                          "camera also serves as the manipulation view (FLaRe's fallback)"),
        DeclareLaunchArgument("head_camera_serial", default_value="",
                              description="Serial number of the head D435i ('' = by device type)"),
        DeclareLaunchArgument("gripper_camera_serial", default_value="",
                              description="Serial number of the gripper D405 ('' = by device type)"),
        DeclareLaunchArgument("navigation_camera_topic", default_value="/camera/color/image_raw",
                              description="Head camera image topic"),
        DeclareLaunchArgument("manipulation_camera_topic", default_value="/gripper_camera/color/image_rect_raw",
                              description="Gripper camera image topic (D405: image_rect_raw)"),
        DeclareLaunchArgument("navigation_camera_rotation", default_value="auto",
                              description="Counter-clockwise rotation the policy applies to head frames: auto "
                                          "(270 with realsense2_camera, 0 with camera_driver:=flare) or 0/90/180/270"),
        DeclareLaunchArgument("goal_topic", default_value="/flare/goal", description="Goal text topic"),
        DeclareLaunchArgument("command_topic", default_value="/flare/command", description="Policy -> executor"),
        DeclareLaunchArgument("result_topic", default_value="/flare/command_result", description="Executor -> policy"),
        DeclareLaunchArgument("ready_topic", default_value="/flare/robot_ready", description="Executor readiness"),
        DeclareLaunchArgument("executor_config", default_value="",
                              description="Executor params YAML ('' = config/executor_stretch.yaml)"),
        DeclareLaunchArgument("policy_config", default_value="",
                              description="Policy params YAML ('' = config/policy_stretch.yaml)"),
        DeclareLaunchArgument("realsense_config", default_value="",
                              description="realsense2_camera params YAML ('' = config/realsense2_stretch.yaml)"),
        DeclareLaunchArgument("camera_config", default_value="",
                              description="realsense_camera params YAML ('' = config/cameras_stretch.yaml)"),
        DeclareLaunchArgument("log_level", default_value="info", description="ROS log level of our nodes"),
    ]
    return LaunchDescription(args + [OpaqueFunction(function=_launch_setup)])
