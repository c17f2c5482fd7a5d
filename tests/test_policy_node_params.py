"""Bad parameters or bundles: policy_node / sim_robot exit with status 2 and one clear line, no traceback."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from ros_helpers import NodeProcess, new_domain, tiny_bundle  # noqa: E402

pytestmark = pytest.mark.ros


def test_bad_parameters_exit_cleanly(tmp_path):
    bundle = tiny_bundle(tmp_path)
    broken = tmp_path / "broken_bundle"
    broken.mkdir()
    (broken / "policy.json").write_text(json.dumps({"format": "something-else"}))
    cases = {
        "no_bundle": ({}, "parameter 'bundle' is required"),
        "missing_dir": ({"bundle": str(tmp_path / "nope")}, "not a bundle directory"),
        "broken_bundle": ({"bundle": str(broken)}, "'format'"),
        "wrong_embodiment": ({"bundle": str(bundle), "embodiment": "stretch"}, "is for 'sim'"),
        "unknown_embodiment": ({"bundle": str(bundle), "embodiment": "r2d2"}, "must be one of"),
        "rotation": ({"bundle": str(bundle), "navigation_camera_rotation": 45}, "navigation_camera_rotation"),
        "max_steps": ({"bundle": str(bundle), "max_steps": 0}, "max_steps"),
        "age_type": ({"bundle": str(bundle), "max_frame_age_s": "soon"}, "max_frame_age_s"),
        "durability": ({"bundle": str(bundle), "goal_durability": "forever"}, "goal_durability"),
    }
    procs = {}
    for name, (params, _) in cases.items():
        _, env = new_domain()
        procs[name] = NodeProcess.python_module(name, "flare_policy.node", dict(params, threads=1), env=env,
                                                log_dir=tmp_path)
    _, env = new_domain()
    sim = NodeProcess.python_module("sim_bad_task", "flare_bringup.sim_robot", {"task": "juggling"}, env=env,
                                    log_dir=tmp_path)
    try:
        for name, (_, needle) in cases.items():
            p = procs[name]
            rc = p.wait(90)
            out = p.output()
            assert rc == 2, f"{name}: exit status {rc}\n{out[-2000:]}"
            assert "Traceback" not in out, f"{name}:\n{out}"
            assert "policy_node: error:" in out and needle in out, f"{name}: {out[-1000:]}"
        assert sim.wait(60) == 2 and "unknown task" in sim.output() and "Traceback" not in sim.output()
    finally:
        for p in list(procs.values()) + [sim]:
            p.stop()


def test_yaml_config_matches_declared_parameters():
    import yaml

    from flare_policy.node_params import PolicyNodeParams

    cfg = Path(__file__).resolve().parents[1] / "ros2_ws/src/flare_policy/config/policy_node.yaml"
    params = yaml.safe_load(cfg.read_text())["policy_node"]["ros__parameters"]
    declared = {k: v for k, (v, _) in PolicyNodeParams.SPEC.items()}
    assert set(params) == set(declared)
    for k, v in params.items():
        assert v == declared[k] and type(v) is type(declared[k]), k
