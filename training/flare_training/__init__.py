"""mini-CHORES simulation, expert demonstrations, behaviour cloning, FLaRe PPO, evaluation and reports.

Imports the policy model (`flare_policy.model`), never rclpy."""
__version__ = "0.1.0"
