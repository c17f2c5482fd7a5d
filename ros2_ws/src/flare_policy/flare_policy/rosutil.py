"""Small rclpy helpers shared by the policy node and the bringup nodes."""
from __future__ import annotations


def shutdown_executor(executor, timeout_sec: float = 2.0) -> None:
    """Shut a MultiThreadedExecutor down after the callbacks already handed to its worker threads finish.

    Shutting down first makes rclpy report "exception never retrieved: cannot use Destroyable" from its
    wake-up guard condition while those callbacks still run.
    """
    pool = getattr(executor, "_executor", None)
    if pool is not None:
        pool.shutdown(wait=True)
    executor.shutdown(timeout_sec=timeout_sec)
