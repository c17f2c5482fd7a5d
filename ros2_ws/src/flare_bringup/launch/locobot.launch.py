"""FLaRe on an Interbotix LoCoBot (Create 3 or Kobuki base): executor + policy (+ the Interbotix stack).

    ros2 launch flare_bringup locobot.launch.py bundle:=/models/locobot_flare robot_model:=locobot_wx250s
    ros2 topic pub --once /flare/goal std_msgs/msg/String "{data: 'find a bed'}"

start_robot:=true includes interbotix_xslocobot_control's xslocobot_control.launch.py (use_base, use_camera =
cameras). The executor drives the base with Twists on cmd_vel_topic closed on odom_topic, and tilts the camera
with interbotix_xs_msgs/JointSingleCommand (tilt_interface:=interbotix). Only the LoCoBot embodiment's actions
run; masked ones are refused.

base_type:=create3 (default) | kobuki sets the base topics (unless cmd_vel_topic / odom_topic are given) and
is passed to the Interbotix launch: Create 3 `/locobot/mobile_base/cmd_vel` + `/locobot/mobile_base/odom`;
Kobuki (kobuki_ros) `/locobot/commands/velocity` + `/locobot/odom`.

The camera topic depends on the realsense-ros version: the Interbotix humble install takes ROS 2 Humble's
current realsense2_camera (>= 4.55), whose topics are private to the node `camera` in `/locobot/camera`:
`/locobot/camera/camera/color/image_raw` (default); older realsense-ros (<= 4.54) publishes
`/locobot/camera/color/image_raw`. If the default is silent, the policy node names the Image topics that do
exist. The Create 3 needs the same RMW (rmw_fastrtps_cpp) and discovery server settings as the NUC.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# base_type -> (Twist topic, odometry topic) under the robot namespace: Interbotix xslocobot (Create 3:
# mobile_base/cmd_vel, mobile_base/odom) and kobuki_ros (commands/velocity, odom)
BASE_TOPICS = {"create3": ("/mobile_base/cmd_vel", "/mobile_base/odom"),
               "kobuki": ("/commands/velocity", "/odom")}


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
    base_type = arg("base_type")
    if base_type not in BASE_TOPICS:
        raise RuntimeError(f"base_type must be one of {sorted(BASE_TOPICS)}, got {base_type!r}")
    robot = arg("robot_name")
    cmd_vel = arg("cmd_vel_topic") or f"/{robot}" + BASE_TOPICS[base_type][0]
    odom = arg("odom_topic") or f"/{robot}" + BASE_TOPICS[base_type][1]
    actions = []
    if backend == "ros" and _truthy(arg("start_robot")):
        actions.append(IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(
                get_package_share_directory("interbotix_xslocobot_control"), "launch",
                "xslocobot_control.launch.py")),
            launch_arguments={"robot_model": arg("robot_model"), "robot_name": arg("robot_name"),
                              "base_type": base_type, "use_base": "true",
                              "use_camera": "true" if _truthy(arg("cameras")) else "false",
                              "use_lidar": "false"}.items()))
    actions.append(Node(
        package="flare_bringup", executable="locobot_executor", name="locobot_executor", output="screen",
        emulate_tty=True,
        parameters=[arg("executor_config") or os.path.join(share, "config", "executor_locobot.yaml"),
                    dict(backend=backend, cmd_vel_topic=cmd_vel, odom_topic=odom,
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
        DeclareLaunchArgument("navigation_camera_topic", default_value="/locobot/camera/camera/color/image_raw",
                              description="Camera image topic (realsense-ros >= 4.55, as the Interbotix humble "
                                          "install has; <= 4.54: /locobot/camera/color/image_raw)"),
        DeclareLaunchArgument("base_type", default_value="create3", choices=["create3", "kobuki"],
                              description="LoCoBot base: sets cmd_vel_topic/odom_topic defaults and the "
                                          "Interbotix launch's base_type"),
        DeclareLaunchArgument("cmd_vel_topic", default_value="",
                              description="Base Twist topic ('' = by base_type: create3 "
                                          "/locobot/mobile_base/cmd_vel, kobuki /locobot/commands/velocity)"),
        DeclareLaunchArgument("odom_topic", default_value="",
                              description="Base odometry topic ('' = by base_type: create3 "
                                          "/locobot/mobile_base/odom, kobuki /locobot/odom)"),
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
