"""FLaRe on an Interbotix LoCoBot (Create 3 base): executor + policy (+ the Interbotix stack with base and camera).

    ros2 launch flare_bringup locobot.launch.py bundle:=/models/locobot_flare robot_model:=locobot_wx250s
    ros2 topic pub --once /flare/goal std_msgs/msg/String "{data: 'find a bed'}"

start_robot:=true includes interbotix_xslocobot_control's xslocobot_control.launch.py (use_base, use_camera =
cameras). The executor drives the base with Twists on cmd_vel_topic closed on odom_topic, and tilts the camera
with interbotix_xs_msgs/JointSingleCommand (tilt_interface:=interbotix). Only the LoCoBot embodiment's actions
run; masked ones are refused. The camera topic depends on the realsense-ros version: <= 4.54
`/locobot/camera/color/image_raw` (default), >= 4.55 `/locobot/camera/camera/color/image_raw` -- check with
`ros2 topic list`. The Create 3 needs the same RMW (rmw_fastrtps_cpp) and discovery server settings as the NUC.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _launch_setup(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    share = get_package_share_directory("flare_bringup")
    backend = arg("backend")
    if backend not in ("ros", "fake"):
        raise RuntimeError(f"backend must be ros or fake, got {backend!r}")
    topics = {"command_topic": arg("command_topic"), "result_topic": arg("result_topic"),
              "ready_topic": arg("ready_topic")}
    actions = []
    if backend == "ros" and _truthy(arg("start_robot")):
        actions.append(IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(
                get_package_share_directory("interbotix_xslocobot_control"), "launch",
                "xslocobot_control.launch.py")),
            launch_arguments={"robot_model": arg("robot_model"), "robot_name": arg("robot_name"),
                              "use_base": "true", "use_camera": "true" if _truthy(arg("cameras")) else "false",
                              "use_lidar": "false"}.items()))
    actions.append(Node(
        package="flare_bringup", executable="locobot_executor", name="locobot_executor", output="screen",
        emulate_tty=True,
        parameters=[arg("executor_config") or os.path.join(share, "config", "executor_locobot.yaml"),
                    dict(backend=backend, cmd_vel_topic=arg("cmd_vel_topic"), odom_topic=arg("odom_topic"),
                         tilt_interface=arg("tilt_interface"), **topics)]))
    if _truthy(arg("use_policy")):
        if not arg("bundle"):
            raise RuntimeError("bundle:=<policy bundle directory> is required (or use_policy:=false)")
        actions.append(Node(
            package="flare_policy", executable="policy_node", name="policy_node", output="screen",
            emulate_tty=True,
            parameters=[arg("policy_config") or os.path.join(share, "config", "policy_locobot.yaml"),
                        dict(bundle=arg("bundle"), device=arg("device"), goal_topic=arg("goal_topic"),
                             navigation_camera_topic=arg("navigation_camera_topic"), **topics)]))
    return actions


def generate_launch_description():
    args = [
        DeclareLaunchArgument("bundle", default_value="", description="Policy bundle directory (locobot "
                              "embodiment; required unless use_policy:=false)"),
        DeclareLaunchArgument("backend", default_value="ros", choices=["ros", "fake"],
                              description="ros: Twist/odometry/Interbotix tilt; fake: dry run without hardware"),
        DeclareLaunchArgument("start_robot", default_value="true", choices=["true", "false"],
                              description="Include interbotix_xslocobot_control (false if it already runs)"),
        DeclareLaunchArgument("robot_model", default_value="locobot_wx250s",
                              description="Interbotix robot model (INTERBOTIX_XSLOCOBOT_ROBOT_MODEL)"),
        DeclareLaunchArgument("robot_name", default_value="locobot", description="Interbotix robot name/namespace"),
        DeclareLaunchArgument("cameras", default_value="true", choices=["true", "false"],
                              description="Start the RealSense through the Interbotix launch (use_camera)"),
        DeclareLaunchArgument("use_policy", default_value="true", choices=["true", "false"],
                              description="Start the policy node here (false: run it on another machine)"),
        DeclareLaunchArgument("device", default_value="cpu", description="torch device of the policy"),
        DeclareLaunchArgument("navigation_camera_topic", default_value="/locobot/camera/color/image_raw",
                              description="Camera image topic (realsense-ros >= 4.55: "
                                          "/locobot/camera/camera/color/image_raw)"),
        DeclareLaunchArgument("cmd_vel_topic", default_value="/locobot/mobile_base/cmd_vel",
                              description="Base Twist topic (Kobuki: /locobot/commands/velocity)"),
        DeclareLaunchArgument("odom_topic", default_value="/locobot/mobile_base/odom",
                              description="Base odometry topic"),
        DeclareLaunchArgument("tilt_interface", default_value="interbotix", choices=["interbotix", "fake", "none"],
                              description="Camera tilt for look_up/look_down"),
        DeclareLaunchArgument("goal_topic", default_value="/flare/goal", description="Goal text topic"),
        DeclareLaunchArgument("command_topic", default_value="/flare/command", description="Policy -> executor"),
        DeclareLaunchArgument("result_topic", default_value="/flare/command_result", description="Executor -> policy"),
        DeclareLaunchArgument("ready_topic", default_value="/flare/robot_ready", description="Executor readiness"),
        DeclareLaunchArgument("executor_config", default_value="",
                              description="Executor params YAML ('' = config/executor_locobot.yaml)"),
        DeclareLaunchArgument("policy_config", default_value="",
                              description="Policy params YAML ('' = config/policy_locobot.yaml)"),
    ]
    return LaunchDescription(args + [OpaqueFunction(function=_launch_setup)])
