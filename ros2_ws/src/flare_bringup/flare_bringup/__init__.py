"""FLaRe bringup: robot executors (Stretch RE1, LoCoBot), cameras, the simulated robot and launch support.

Importing this package (or `flare_bringup.executors`) imports neither torch nor rclpy; the ROS nodes import
rclpy themselves.
"""
__version__ = "0.1.0"
