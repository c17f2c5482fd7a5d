from glob import glob

from setuptools import find_packages, setup

package_name = "flare_policy"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools", "numpy", "safetensors", "pyyaml"],
    zip_safe=True,
    description="FLaRe transformer policy, bundles, checkpoint import and ROS 2 policy node",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "flare-policy = flare_policy.cli:main",
            "policy_node = flare_policy.node:main",
        ],
    },
)
