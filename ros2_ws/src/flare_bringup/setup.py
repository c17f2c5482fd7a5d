from glob import glob

from setuptools import find_packages, setup

package_name = "flare_bringup"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools", "numpy", "pyyaml", "pillow"],
    zip_safe=True,
    description="Bringup for FLaRe policies on Stretch, LoCoBot and the mini-CHORES simulated robot",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "stretch_executor = flare_bringup.executor_node:stretch_main",
            "locobot_executor = flare_bringup.executor_node:locobot_main",
            "realsense_camera = flare_bringup.realsense_camera:main",
            "sim_robot = flare_bringup.sim_robot:main",
            "flare-demo = flare_bringup.demo:main",
            # executables are registered by the modules that implement them (see README)
        ],
    },
)
