# syntax=docker/dockerfile:1
# GPU trainer: flare-train (BC, FLaRe PPO, evaluation) on CUDA. No ROS inside.
#
#   docker compose run --rm trainer flare-train ppo --init /ws/models/sim_tiny_bc --device cuda
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04
FROM ${CUDA_IMAGE}
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1

# Python 3.11, as on the development machines (deadsnakes)
RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH VIRTUAL_ENV=/opt/venv

WORKDIR /ws
COPY requirements.txt constraints.txt /ws/
# CUDA torch first (the pinned constraints name the CPU build), then the pinned rest without the ROS wheels
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" \
    && grep -v -E '^(torch|ros-)' constraints.txt > /tmp/constraints.txt \
    && grep -v -E '^(ros-|#)' requirements.txt | grep -v '^$' > /tmp/requirements.txt \
    && pip install -c /tmp/constraints.txt -r /tmp/requirements.txt
COPY ros2_ws/src/flare_policy /ws/ros2_ws/src/flare_policy
COPY training /ws/training
RUN pip install --no-deps -e /ws/ros2_ws/src/flare_policy -e /ws/training

CMD ["flare-train", "--help"]
