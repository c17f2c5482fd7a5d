"""FLaRe policy for ROS 2: the model (`flare_policy.model`), bundles, checkpoint import, a ROS-free runner
and the rclpy node. Importing this package loads neither torch nor rclpy."""
__version__ = "0.1.0"
