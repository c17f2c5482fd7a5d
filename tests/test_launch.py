"""Launch files and YAML configs of flare_bringup.

`launch` / `launch_ros` are not installable here (not on PyPI), so the launch files are checked statically
(ast): every package/executable pair they start exists (our console scripts, or a known external package),
every launch file they include and every config they reference exists, every launch argument they read is
declared, and every parameter they (or the YAML configs) set is one the target node declares. The YAML files
are then loaded by the real nodes (`--params-file`, real rclpy), which also checks the parameter types.
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BRINGUP = ROOT / "ros2_ws" / "src" / "flare_bringup"
LAUNCH_FILES = sorted((BRINGUP / "launch").glob("*.launch.py"))
CONFIG = BRINGUP / "config"

# packages the launch files may use that are not in this repository, with what they may start / include
EXTERNAL_EXECUTABLES = {"realsense2_camera": {"realsense2_camera_node"}}
EXTERNAL_LAUNCH = {"stretch_core": {"stretch_driver.launch.py"},
                   "interbotix_xslocobot_control": {"xslocobot_control.launch.py"}}
ALLOWED_IMPORTS = {"os", "launch", "launch.actions", "launch.substitutions", "launch.conditions",
                   "launch.launch_description_sources", "launch_ros.actions", "ament_index_python.packages"}


def _console_scripts(pkg: str) -> dict[str, str]:
    tree = ast.parse((ROOT / "ros2_ws" / "src" / pkg / "setup.py").read_text())
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(
                r"[\w-]+ = [\w.]+:\w+", node.value):
            name, target = node.value.split(" = ")
            out[name] = target
    return out


def _spec_keys(path: Path, var: str) -> dict[str, object] | None:
    """Keys (and literal defaults, or ...) of a `<var> = {name: (default, description), ...}` dict."""
    if not path.is_file():
        return None
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == var \
                and isinstance(node.value, ast.Dict):
            out = {}
            for k, v in zip(node.value.keys, node.value.values):
                try:
                    out[k.value] = ast.literal_eval(v.elts[0])
                except (ValueError, AttributeError):
                    out[k.value] = ...
            return out
    return None


def _realsense_params() -> set[str]:
    tree = ast.parse((BRINGUP / "flare_bringup" / "realsense_camera.py").read_text())
    return {n.args[0].value for n in ast.walk(tree)
            if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "p" and n.args
            and isinstance(n.args[0], ast.Constant)}


def _executor_params() -> set[str]:
    from flare_bringup.executor_node import DESCRIPTIONS

    return set(DESCRIPTIONS)


def node_params(package: str, executable: str) -> set[str] | dict | None:
    """Parameter names the node declares; None = external, not checked."""
    if package == "flare_bringup" and executable in ("stretch_executor", "locobot_executor"):
        return _executor_params()
    if package == "flare_bringup" and executable == "realsense_camera":
        return _realsense_params()
    if package == "flare_bringup" and executable == "sim_robot":
        spec = _spec_keys(BRINGUP / "flare_bringup" / "sim_robot.py", "PARAMS")
        if spec is None:
            pytest.skip("sim_robot.py (with its PARAMS table) not written yet")
        return spec
    if package == "flare_policy" and executable == "policy_node":
        spec = _spec_keys(ROOT / "ros2_ws" / "src" / "flare_policy" / "flare_policy" / "node_params.py", "SPEC")
        if spec is None:
            pytest.skip("flare_policy/node_params.py (with its PolicyNodeParams.SPEC table) not written yet")
        return spec
    return None


# ------------------------------------------------------------------------------------------- launch files
class LaunchInfo:
    def __init__(self, path: Path):
        self.path = path
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.assigns = {t.id: n.value for n in ast.walk(self.tree) if isinstance(n, ast.Assign)
                        for t in n.targets if isinstance(t, ast.Name)}
        self.declared: dict[str, tuple[str, list | None]] = {}
        for n in self._calls("DeclareLaunchArgument"):
            kw = {k.arg: k.value for k in n.keywords}
            choices = [e.value for e in kw["choices"].elts] if "choices" in kw else None
            self.declared[n.args[0].value] = (kw["default_value"].value, choices)

    def _calls(self, name: str, root=None):
        for n in ast.walk(root or self.tree):
            if isinstance(n, ast.Call) and (getattr(n.func, "id", None) == name
                                            or getattr(n.func, "attr", None) == name):
                yield n

    def used_arguments(self) -> set[str]:
        used = set()
        for fn in ("LaunchConfiguration", "arg"):
            for n in self._calls(fn):
                if n.args and isinstance(n.args[0], ast.Constant):
                    used.add(n.args[0].value)
        return used

    def nodes(self):
        for n in self._calls("Node"):
            kw = {k.arg: k.value for k in n.keywords}
            yield n, kw["package"].value, kw["executable"].value, kw

    def dict_keys(self, expr) -> set[str]:
        keys = set()
        if isinstance(expr, ast.Dict):
            for k, v in zip(expr.keys, expr.values):
                if k is None:
                    keys |= self.dict_keys(v)
                elif isinstance(k, ast.Constant):
                    keys.add(k.value)
        elif isinstance(expr, ast.Call) and getattr(expr.func, "id", "") == "dict":
            for k in expr.keywords:
                keys |= {k.arg} if k.arg else self.dict_keys(k.value)
        elif isinstance(expr, ast.Name) and expr.id in self.assigns:
            keys |= self.dict_keys(self.assigns[expr.id])
        return keys

    def strings(self, root=None) -> set[str]:
        return {n.value for n in ast.walk(root or self.tree) if isinstance(n, ast.Constant)
                and isinstance(n.value, str)}


@pytest.fixture(scope="module", params=[p.name for p in LAUNCH_FILES])
def launch(request) -> LaunchInfo:
    return LaunchInfo(BRINGUP / "launch" / request.param)


def test_the_three_launch_files_exist_and_are_installed():
    assert {p.name for p in LAUNCH_FILES} == {"stretch.launch.py", "locobot.launch.py", "sim.launch.py"}
    setup = (BRINGUP / "setup.py").read_text()
    assert 'glob("launch/*.launch.py")' in setup and 'glob("config/*.yaml")' in setup


def test_launch_file_compiles_and_only_imports_launch_api(launch):
    compile(launch.path.read_text(), str(launch.path), "exec")
    fns = {n.name for n in launch.tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in fns
    for n in ast.walk(launch.tree):
        if isinstance(n, ast.ImportFrom):
            assert n.module in ALLOWED_IMPORTS, n.module
        elif isinstance(n, ast.Import):
            assert all(a.name in ALLOWED_IMPORTS for a in n.names)


def test_every_node_package_and_executable_exists(launch):
    ours = {"flare_bringup": _console_scripts("flare_bringup"), "flare_policy": _console_scripts("flare_policy")}
    found = list(launch.nodes())
    assert found
    for _, pkg, exe, _ in found:
        if pkg in ours:
            assert exe in ours[pkg], f"{launch.path.name}: {pkg} has no executable {exe}"
            module = ours[pkg][exe].split(":")[0]
            rel = Path(*module.split(".")).with_suffix(".py")
            assert (ROOT / "ros2_ws" / "src" / pkg / rel).is_file(), (exe, rel)
        else:
            assert exe in EXTERNAL_EXECUTABLES.get(pkg, set()), f"{launch.path.name}: unknown {pkg}/{exe}"


def test_every_included_launch_file_and_package_is_known(launch):
    pkgs = {n.args[0].value for n in launch._calls("get_package_share_directory")}
    assert pkgs <= {"flare_bringup"} | set(EXTERNAL_LAUNCH), pkgs
    for inc in launch._calls("IncludeLaunchDescription"):
        names = {s for s in launch.strings(inc) if s.endswith(".launch.py")}
        share = {n.args[0].value for n in launch._calls("get_package_share_directory", inc)}
        assert len(names) == 1 and len(share) == 1, ast.dump(inc)[:300]
        pkg, name = share.pop(), names.pop()
        assert name in EXTERNAL_LAUNCH[pkg], (pkg, name)


def test_every_launch_argument_used_is_declared_with_valid_default(launch):
    used = launch.used_arguments()
    assert used <= set(launch.declared), used - set(launch.declared)
    assert set(launch.declared) <= used, f"declared but unused: {set(launch.declared) - used}"
    for name, (default, choices) in launch.declared.items():
        if choices is not None:
            assert default in choices, (name, default, choices)
    required = {"bundle", "use_policy", "device", "command_topic", "result_topic", "ready_topic", "goal_topic",
                "policy_config"}
    if launch.path.name != "sim.launch.py":
        required |= {"backend", "cameras", "navigation_camera_topic", "executor_config"}
    assert required <= set(launch.declared), required - set(launch.declared)


def test_stretch_launch_backend_and_camera_choices():
    info = LaunchInfo(BRINGUP / "launch" / "stretch.launch.py")
    assert info.declared["backend"][1] == ["driver", "body", "fake"]
    assert info.declared["camera_driver"][1] == ["realsense2_camera", "flare"]
    assert {"manipulation_camera_topic", "start_driver", "head_camera_serial"} <= set(info.declared)
    loco = LaunchInfo(BRINGUP / "launch" / "locobot.launch.py")
    # a stock RE1 has no gripper D405: off by default, the head camera then stands in (FLaRe's own fallback)
    assert info.declared["manipulation_camera"] == ("false", ["true", "false"])
    src = (BRINGUP / "launch" / "stretch.launch.py").read_text()
    assert "manip_topic, manip_rotation = nav_topic, nav_rotation" in src
    loco = LaunchInfo(BRINGUP / "launch" / "locobot.launch.py")
    assert loco.declared["backend"][1] == ["ros", "fake"]
    # base_type sets both base topics (a Kobuki LoCoBot's odometry is /locobot/odom, kobuki_ros)
    assert loco.declared["base_type"] == ("create3", ["create3", "kobuki"])
    assert loco.declared["cmd_vel_topic"][0] == "" and loco.declared["odom_topic"][0] == ""
    topics = ast.literal_eval(loco.assigns["BASE_TOPICS"])
    assert {k: tuple("/locobot" + t for t in v) for k, v in topics.items()} == {
        "create3": ("/locobot/mobile_base/cmd_vel", "/locobot/mobile_base/odom"),
        "kobuki": ("/locobot/commands/velocity", "/locobot/odom")}
    assert loco.declared["navigation_camera_topic"][0] == "/locobot/camera/camera/color/image_raw"


def test_configs_referenced_exist_and_node_parameters_are_declared(launch):
    for call, pkg, exe, kw in launch.nodes():
        declared = node_params(pkg, exe)
        yamls = {s for s in launch.strings(call) if s.endswith(".yaml")}
        for y in yamls:
            assert (CONFIG / y).is_file(), f"{launch.path.name}: missing config {y}"
        if declared is None:
            continue
        keys = set()
        for elt in kw["parameters"].elts:
            keys |= launch.dict_keys(elt)
        assert keys, (pkg, exe)
        assert keys <= set(declared), f"{launch.path.name}: {exe} does not declare {keys - set(declared)}"
        for y in yamls:
            for node_name, params in _yaml_nodes(CONFIG / y).items():
                flat = set(_flatten(params))
                assert flat <= set(declared), f"{y} [{node_name}]: {exe} does not declare {flat - set(declared)}"


# ------------------------------------------------------------------------------------------- YAML configs
def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _yaml_nodes(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and data, path
    out = {}
    for node, body in data.items():
        assert isinstance(body, dict) and set(body) == {"ros__parameters"}, (path.name, node)
        assert isinstance(body["ros__parameters"], dict)
        out[node] = body["ros__parameters"]
    return out


CONFIG_TARGETS = {
    "executor_stretch.yaml": ("flare_bringup", "stretch_executor"),
    "executor_locobot.yaml": ("flare_bringup", "locobot_executor"),
    "cameras_stretch.yaml": ("flare_bringup", "realsense_camera"),
    "policy_stretch.yaml": ("flare_policy", "policy_node"),
    "policy_locobot.yaml": ("flare_policy", "policy_node"),
    "policy_sim.yaml": ("flare_policy", "policy_node"),
    "sim_robot.yaml": ("flare_bringup", "sim_robot"),
    "realsense2_stretch.yaml": ("realsense2_camera", "realsense2_camera_node"),
}


def test_every_config_is_a_ros_params_file_for_a_known_node():
    from rclpy.parameter import parameter_dict_from_yaml_file

    files = sorted(p.name for p in CONFIG.glob("*.yaml"))
    assert set(files) == set(CONFIG_TARGETS), files
    for name in files:
        nodes = _yaml_nodes(CONFIG / name)
        params = parameter_dict_from_yaml_file(str(CONFIG / name), use_wildcard=True,
                                               target_nodes=[n for n in nodes if n != "/**"] or None)
        assert params, name
        for values in nodes.values():
            for k, v in _flatten(values).items():
                assert v is not None and not (isinstance(v, list) and not v), (name, k)
                if isinstance(v, list):
                    assert len({type(x) for x in v}) == 1, (name, k, v)  # ROS arrays are homogeneous


@pytest.mark.parametrize("name", sorted(k for k, (pkg, _) in CONFIG_TARGETS.items() if pkg == "flare_policy")
                         + ["sim_robot.yaml"])
def test_policy_and_sim_configs_match_the_declared_parameters_and_types(name):
    pkg, exe = CONFIG_TARGETS[name]
    spec = node_params(pkg, exe)
    for values in _yaml_nodes(CONFIG / name).values():
        for k, v in values.items():
            assert k in spec, f"{name}: {exe} has no parameter {k!r}"
            default = spec[k]
            if default is ... or default is None:
                continue
            if isinstance(default, float):
                assert isinstance(v, (int, float)) and not isinstance(v, bool), (name, k, v)
            else:
                assert type(v) is type(default), f"{name}: {k}={v!r} but {exe} expects {type(default).__name__}"


def test_policy_configs_match_their_embodiment():
    for robot, emb in (("stretch", "stretch"), ("locobot", "locobot"), ("sim", "sim")):
        (values,) = _yaml_nodes(CONFIG / f"policy_{robot}.yaml").values()
        assert values["embodiment"] == emb
    (stretch,) = _yaml_nodes(CONFIG / "policy_stretch.yaml").values()
    assert stretch["navigation_camera_rotation"] == 270  # head D435i mounted sideways (stretch_ai: 3 CCW turns)
    assert stretch["manipulation_camera_topic"].endswith("/image_rect_raw")  # the D405 has no RGB module
    (cams,) = [_yaml_nodes(CONFIG / "cameras_stretch.yaml")]
    assert cams["head_camera"]["rotation_deg"] == 270 and cams["gripper_camera"]["rotation_deg"] == 0


# ----------------------------------------------------------------------------- the real nodes load the YAML
def _exe(name: str) -> list[str]:
    exe = shutil.which(name, path=os.path.dirname(sys.executable))
    assert exe, f"console script {name} is not installed in the venv (pip install -e ros2_ws/src/flare_bringup)"
    return [exe]


@pytest.mark.ros
def test_real_nodes_load_the_yaml_configs(tmp_path):
    """Each executor loads its YAML (declared types must match) and, with a fake backend, becomes ready; the
    hardware backends that cannot exist here fail at connect time -- after every parameter was loaded -- with
    their clear message; realsense_camera loads its YAML and stops at the missing library / device."""
    from flare_bringup.rosproc import ros_env, unique_domain_id

    runs = {
        "stretch_fake": (_exe("stretch_executor") + ["--ros-args", "--params-file",
                                                      str(CONFIG / "executor_stretch.yaml"), "-p",
                                                      "backend:=fake"], "ready"),
        "stretch_driver": (_exe("stretch_executor") + ["--ros-args", "--params-file",
                                                        str(CONFIG / "executor_stretch.yaml")], "control_msgs"),
        "stretch_body": (_exe("stretch_executor") + ["--ros-args", "--params-file",
                                                      str(CONFIG / "executor_stretch.yaml"), "-p", "backend:=body"],
                         "stretch_body"),
        "locobot_fake": (_exe("locobot_executor") + ["--ros-args", "--params-file",
                                                      str(CONFIG / "executor_locobot.yaml"), "-p", "backend:=fake"],
                         "ready"),
        "locobot_ros": (_exe("locobot_executor") + ["--ros-args", "--params-file",
                                                     str(CONFIG / "executor_locobot.yaml")], "interbotix_xs_msgs"),
        "camera": (_exe("realsense_camera") + ["--ros-args", "-r", "__node:=head_camera", "--params-file",
                                                str(CONFIG / "cameras_stretch.yaml")], "RealSense|pyrealsense2"),
    }
    procs = {}
    for name, (cmd, _) in runs.items():
        log = open(tmp_path / f"{name}.log", "wb")
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ros_env(unique_domain_id()),
                                        start_new_session=True), log)
    end = time.monotonic() + 60
    try:
        for name, (proc, _) in procs.items():
            if runs[name][1] == "ready":
                while time.monotonic() < end and "robot ready" not in (tmp_path / f"{name}.log").read_text():
                    assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()
                    time.sleep(0.1)
                proc.send_signal(2)
            proc.wait(max(1.0, end - time.monotonic()))
    finally:
        for proc, log in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    for name, (proc, _) in procs.items():
        out = (tmp_path / f"{name}.log").read_text()
        assert "InvalidParameter" not in out and "Traceback" not in out, (name, out)
        if runs[name][1] == "ready":
            assert "robot ready" in out and proc.returncode == 0, (name, out)
        else:
            assert proc.returncode == 1 and re.search(runs[name][1], out), (name, out)
            assert "ERROR" in out


# ------------------------------------------------------------- launch logic, run against a recording stub API
class _Rec:
    def __init__(self, kind, *args, **kwargs):
        self.kind, self.args, self.kwargs = kind, args, kwargs


def _stub_modules(share_of):
    import types

    def cls(kind):
        return type(kind, (_Rec,), {"__init__": lambda self, *a, **k: _Rec.__init__(self, kind, *a, **k)})

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    mods = {
        "launch": {"LaunchDescription": cls("LaunchDescription")},
        "launch.actions": {k: cls(k) for k in ("DeclareLaunchArgument", "IncludeLaunchDescription", "LogInfo",
                                                "OpaqueFunction")},
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
        "launch.launch_description_sources": {"PythonLaunchDescriptionSource": cls("PythonLaunchDescriptionSource")},
        "launch_ros": {},
        "launch_ros.actions": {"Node": cls("Node")},
        "ament_index_python": {},
        "ament_index_python.packages": {"get_package_share_directory": share_of},
    }
    out = {}
    for name, attrs in mods.items():
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        out[name] = m
    return out


def run_launch(name: str, monkeypatch, **overrides) -> list:
    """Import the launch file against stub launch modules, resolve its arguments (defaults + overrides) and
    run its OpaqueFunction: returns the actions it would launch."""
    import importlib.util

    def share_of(pkg):
        return str(BRINGUP) if pkg == "flare_bringup" else f"/opt/ros/humble/share/{pkg}"

    for mod_name, mod in _stub_modules(share_of).items():
        monkeypatch.setitem(sys.modules, mod_name, mod)
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), BRINGUP / "launch" / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    entities = ld.args[0]
    context = {e.args[0]: e.kwargs["default_value"] for e in entities if e.kind == "DeclareLaunchArgument"}
    for k, v in overrides.items():
        assert k in context, f"{name} has no argument {k}"
        context[k] = v
    (opaque,) = [e for e in entities if e.kind == "OpaqueFunction"]
    return opaque.kwargs["function"](context)


def _nodes(actions, executable=None):
    return [a for a in actions if a.kind == "Node" and (executable is None or a.kwargs["executable"] == executable)]


def _params(node) -> dict:
    out = {}
    for p in node.kwargs["parameters"]:
        if isinstance(p, dict):
            out.update(p)
        else:
            assert Path(p).is_file(), p
    return out


def test_stretch_launch_driver_backend_with_realsense2(monkeypatch):
    acts = run_launch("stretch.launch.py", monkeypatch, bundle="/models/b")
    (inc,) = [a for a in acts if a.kind == "IncludeLaunchDescription"]
    assert inc.args[0].args[0].endswith("stretch_core/launch/stretch_driver.launch.py")
    assert dict(inc.kwargs["launch_arguments"])["mode"] == "position"
    (ex,) = _nodes(acts, "stretch_executor")
    assert _params(ex)["backend"] == "driver"
    # stock RE1: no gripper D405 started; the head frames are the manipulation view too, rotated alike
    cams = _nodes(acts, "realsense2_camera_node")
    assert [c.kwargs["name"] for c in cams] == ["camera"]
    (pol,) = _nodes(acts, "policy_node")
    p = _params(pol)
    assert p["bundle"] == "/models/b" and p["navigation_camera_rotation"] == 270
    assert p["manipulation_camera_topic"] == "/camera/color/image_raw" and p["manipulation_camera_rotation"] == 270
    assert any(a.kind == "LogInfo" and "manipulation view is the head camera" in a.kwargs["msg"] for a in acts)
    # with a D405 mounted on the gripper
    acts = run_launch("stretch.launch.py", monkeypatch, bundle="/models/b", manipulation_camera="true")
    assert [c.kwargs["name"] for c in _nodes(acts, "realsense2_camera_node")] == ["camera", "gripper_camera"]
    p = _params(_nodes(acts, "policy_node")[0])
    assert p["manipulation_camera_topic"] == "/gripper_camera/color/image_rect_raw"
    assert p["manipulation_camera_rotation"] == 0


def test_stretch_launch_body_backend_never_starts_stretch_driver(monkeypatch):
    acts = run_launch("stretch.launch.py", monkeypatch, bundle="/m", backend="body", cameras="false")
    assert not [a for a in acts if a.kind == "IncludeLaunchDescription"]
    assert any(a.kind == "LogInfo" and "stretch_driver" in a.kwargs["msg"] for a in acts)
    assert _params(_nodes(acts, "stretch_executor")[0])["backend"] == "body"
    assert not _nodes(acts, "realsense2_camera_node") and not _nodes(acts, "realsense_camera")


def test_stretch_launch_flare_cameras_rotate_so_the_policy_does_not(monkeypatch):
    acts = run_launch("stretch.launch.py", monkeypatch, bundle="/m", camera_driver="flare",
                      manipulation_camera="false", start_driver="false")
    assert not [a for a in acts if a.kind == "IncludeLaunchDescription"]
    (cam,) = _nodes(acts, "realsense_camera")
    assert _params(cam)["rotation_deg"] == 270 and _params(cam)["image_topic"] == "/camera/color/image_raw"
    assert _params(_nodes(acts, "policy_node")[0])["navigation_camera_rotation"] == 0


def test_stretch_launch_requires_a_bundle_unless_the_policy_runs_elsewhere(monkeypatch):
    with pytest.raises(RuntimeError, match="bundle"):
        run_launch("stretch.launch.py", monkeypatch)
    acts = run_launch("stretch.launch.py", monkeypatch, use_policy="false", backend="fake", cameras="false")
    assert [n.kwargs["executable"] for n in _nodes(acts)] == ["stretch_executor"]


def test_locobot_launch(monkeypatch):
    acts = run_launch("locobot.launch.py", monkeypatch, bundle="/m")
    (inc,) = [a for a in acts if a.kind == "IncludeLaunchDescription"]
    largs = dict(inc.kwargs["launch_arguments"])
    assert inc.args[0].args[0].endswith("interbotix_xslocobot_control/launch/xslocobot_control.launch.py")
    assert largs["use_base"] == "true" and largs["use_camera"] == "true" and largs["robot_model"] == "locobot_wx250s"
    ex = _params(_nodes(acts, "locobot_executor")[0])
    assert ex["cmd_vel_topic"] == "/locobot/mobile_base/cmd_vel" and ex["tilt_interface"] == "interbotix"
    assert ex["odom_topic"] == "/locobot/mobile_base/odom" and largs["base_type"] == "create3"
    assert _params(_nodes(acts, "policy_node")[0])["navigation_camera_topic"] == \
        "/locobot/camera/camera/color/image_raw"
    acts = run_launch("locobot.launch.py", monkeypatch, bundle="/m", base_type="kobuki")
    ex = _params(_nodes(acts, "locobot_executor")[0])
    assert (ex["cmd_vel_topic"], ex["odom_topic"]) == ("/locobot/commands/velocity", "/locobot/odom")
    (inc,) = [a for a in acts if a.kind == "IncludeLaunchDescription"]
    assert dict(inc.kwargs["launch_arguments"])["base_type"] == "kobuki"
    acts = run_launch("locobot.launch.py", monkeypatch, bundle="/m", base_type="kobuki", odom_topic="/my/odom")
    assert _params(_nodes(acts, "locobot_executor")[0])["odom_topic"] == "/my/odom"  # explicit topics win
    acts = run_launch("locobot.launch.py", monkeypatch, bundle="/m", backend="fake")
    assert not [a for a in acts if a.kind == "IncludeLaunchDescription"]


def test_sim_launch(monkeypatch):
    acts = run_launch("sim.launch.py", monkeypatch, bundle="/m", task="pickup")
    (sim,) = _nodes(acts, "sim_robot")
    (pol,) = _nodes(acts, "policy_node")
    assert _params(sim)["task"] == "pickup"
    assert _params(sim)["camera_topic"] == _params(pol)["navigation_camera_topic"]
    assert _params(pol)["embodiment"] == _params(sim)["embodiment"] == "sim"
