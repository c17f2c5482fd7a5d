#!/bin/bash
# Source ROS 2, this workspace and (if mounted) a robot workspace, e.g. the Interbotix or stretch_ros2 one.
set -e
source "/opt/ros/${ROS_DISTRO:-humble}/setup.bash"
source /ws/install/setup.bash
for ws in ${ROBOT_WS:-/interbotix_ws /stretch_ws}; do
  if [ -f "$ws/install/setup.bash" ]; then
    # shellcheck disable=SC1090,SC1091
    source "$ws/install/setup.bash"
  fi
done
exec "$@"
