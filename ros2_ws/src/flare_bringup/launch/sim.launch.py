"""FLaRe closed loop on the simulated robot (mini-CHORES as a ROS 2 robot): sim_robot + policy, no hardware.

    ros2 launch flare_bringup sim.launch.py bundle:=$PWD/models/sim_tiny_bc
    ros2 topic echo /flare/episode_outcome

sim_robot publishes each episode's goal itself (publish_goal, config/sim_robot.yaml) and loads the next seed
after every outcome (auto_reset), so the loop runs unattended. `make demo` does the same without `launch`.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _launch_setup(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    share = get_package_share_directory("flare_bringup")
    topics = {"command_topic": arg("command_topic"), "result_topic": arg("result_topic"),
              "ready_topic": arg("ready_topic"), "goal_topic": arg("goal_topic")}
    actions = [Node(
        package="flare_bringup", executable="sim_robot", name="sim_robot", output="screen", emulate_tty=True,
        parameters=[arg("sim_config") or os.path.join(share, "config", "sim_robot.yaml"),
                    dict(task=arg("task"), embodiment=arg("embodiment"), camera_topic=arg("camera_topic"),
                         **topics)])]
    if _truthy(arg("use_policy")):
        if not arg("bundle"):
            raise RuntimeError("bundle:=<policy bundle directory> is required (e.g. $PWD/models/sim_tiny_bc)")
        actions.append(Node(
            package="flare_policy", executable="policy_node", name="policy_node", output="screen",
            emulate_tty=True,
            parameters=[arg("policy_config") or os.path.join(share, "config", "policy_sim.yaml"),
                        dict(bundle=arg("bundle"), embodiment=arg("embodiment"), device=arg("device"),
                             navigation_camera_topic=arg("camera_topic"), **topics)]))
    return actions


def generate_launch_description():
    args = [
        DeclareLaunchArgument("bundle", default_value="", description="Policy bundle directory (sim embodiment)"),
        DeclareLaunchArgument("task", default_value="objectnav",
                              description="mini-CHORES task: objectnav | pickup | fetch | roomvisit"),
        DeclareLaunchArgument("embodiment", default_value="sim", choices=["sim", "sim_locobot"],
                              description="sim (all actions) or sim_locobot (navigation only)"),
        DeclareLaunchArgument("use_policy", default_value="true", choices=["true", "false"],
                              description="Start the policy node here"),
        DeclareLaunchArgument("device", default_value="cpu", description="torch device of the policy"),
        DeclareLaunchArgument("camera_topic", default_value="/camera/color/image_raw",
                              description="Simulated camera topic"),
        DeclareLaunchArgument("goal_topic", default_value="/flare/goal", description="Goal text topic"),
        DeclareLaunchArgument("command_topic", default_value="/flare/command", description="Policy -> robot"),
        DeclareLaunchArgument("result_topic", default_value="/flare/command_result", description="Robot -> policy"),
        DeclareLaunchArgument("ready_topic", default_value="/flare/robot_ready", description="Robot readiness"),
        DeclareLaunchArgument("sim_config", default_value="",
                              description="sim_robot params YAML ('' = config/sim_robot.yaml)"),
        DeclareLaunchArgument("policy_config", default_value="",
                              description="Policy params YAML ('' = config/policy_sim.yaml)"),
    ]
    return LaunchDescription(args + [OpaqueFunction(function=_launch_setup)])
