"""The AI2-THOR / CHORES backend: a Gymnasium environment over `ai2thor.controller.Controller` (ai2thor 5.0.0),
driving the Stretch agent the way FLaRe's `StretchController` does.

Upstream: JiahengHu/FLaRe 656f46a, `utils/constants/stretch_initialization_utils.py` (constants and
`STRETCH_ENV_ARGS`), `environment/stretch_controller.py` (`agent_step`, `calibrate_agent`, `reset`, camera
crops), `environment/stretch_state.py` (what counts as an arm/wrist move), `tasks/multi_task_eval_sampler.py`
(teleport to the spec's start pose), `tasks/abstract_task_sampler.py` (materials). Task rules and files:
`thor_tasks.py`; Objaverse assets (FLaRe's `ai2thor.hooks` asset hook, `assets_dir`): `thor_assets.py`.

Observation (dict), like mini-CHORES': "rgb" = the bundle's cameras, each the simulator frame cropped 6 px per
side (396x224 -> 384x224) and prepared with the bundle's CameraSpec (`flare_policy.preprocess.prepare_frame`);
one camera gives (H, W, 3), two give (2, H, W, 3) in the order (navigation, manipulation) =
`agent.CAMERA_ORDER`; "in_hand" 0/1 (`arm.heldObjects`), "goal" str, "step" int. Actions: the 20 of
`flare_policy.embodiments.STRETCH_ACTIONS` (embodiment `stretch`). Reward: +10 on a successful `end`.

Running it needs what this project cannot ship: an AI2-THOR Unity build with the Stretch agent, ProcTHOR-Objaverse
houses, SPOC task specs and, for Objaverse houses, their asset files (`assets_dir`; see README "AI2-THOR"). The tests
drive the real Controller against `tests/fake_thor_unity.py`, which checks the wiring, not the simulation.
"""
from __future__ import annotations

import copy
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from flare_policy.embodiments import STRETCH_ACTIONS

from . import thor_tasks as T
from .thor_assets import ThorAssetError, ThorAssetLoader, asset_hook_controller_class
from .core import GOAL_CHARSET, SPLITS, seed_split

# ---- utils/constants/stretch_initialization_utils.py (JiahengHu/FLaRe)
FLARE_STRETCH_COMMIT = "966bd7758586e05d18f6181f459c0e90ba318bec"  # STRETCH_COMMIT_ID: AI2's own package index
AGENT_MOVEMENT_CONSTANT = 0.2
AGENT_ROTATION_DEG = 30
ARM_MOVE_CONSTANT = 0.1
WRIST_ROTATION = 10
STRETCH_WRIST_BOUND_1, STRETCH_WRIST_BOUND_2 = 75, -260
INTEL_CAMERA_WIDTH, INTEL_CAMERA_HEIGHT = 396, 224
INTEL_VERTICAL_FOV = 59
MAXIMUM_DISTANCE_ARM_FROM_AGENT_CENTER = 0.8673349051766235
MAXIMUM_SERVER_TIMEOUT = 1200  # seconds; FLaRe raised ai2thor's 100 for CloudRendering
AGENT_RADIUS_LIST = [(0, 0.5), (1, 0.4), (2, 0.3), (3, 0.2)]
ADDITIONAL_ARM_ARGS = {"returnToStart": True, "speed": 1}
LIFT_JOINT_OFFSET = 0.16297650337219238  # environment/stretch_controller.py::get_relative_stretch_current_arm_state
# environment/stretch_state.py / StretchController._universal_state_tolerance: an arm or wrist action "moved"
BASE_TOLERANCE_XZ, BASE_TOLERANCE_DEG = 0.01, 1.5
WRIST_TOLERANCE_YZ, WRIST_TOLERANCE_YAW = 0.005, 2.0
WRIST_FORBIDDEN = (75, 100)  # StretchState.wrist_rotation_bounds

# The Unity `Initialize` arguments of STRETCH_ENV_ARGS. Left out: its Python-side keys (server_class, width,
# height, commit_id, branch, server_timeout: Controller arguments set below; action_hook_runner: needs
# `ai2thor.hooks`, absent from PyPI's 5.0.0, replaced by `thor_assets` when `assets_dir` is set;
# render_mani_camera / use_quick_navi_action: StretchController's own switches, both True in FLaRe and built into
# `action_messages`).
UNITY_INITIALIZE_ARGS = dict(
    gridSize=AGENT_MOVEMENT_CONSTANT * 0.75,  # 0.15, "smaller than AGENT_MOVEMENT_CONSTANT to improve fidelity"
    visibilityDistance=MAXIMUM_DISTANCE_ARM_FROM_AGENT_CENTER,
    visibilityScheme="Distance",
    fieldOfView=INTEL_VERTICAL_FOV,
    useMassThreshold=True,
    massThreshold=10,
    autoSimulation=False,
    autoSyncTransforms=True,
    renderInstanceSegmentation=True,
    agentMode="stretch",
    renderDepthImage=False,
    cameraNearPlane=0.01,
    snapToGrid=False,
    fastActionEmit=True,
)
TRAIN_MATERIALS_P = 0.8  # training/online: RandomizeMaterials with p 0.8 per train episode, never in evaluation


class ThorControllerError(RuntimeError):
    """The AI2-THOR process died or stopped answering; the message says which action and where its log is."""


@dataclass
class ThorSettings:
    """Where the data and the simulator come from (YAML: `--env-config`). Paths follow FLaRe's layout."""
    task_specs: str = ""  # FLaRe's <TASK_TYPE> dir with train/ and val/ (<house>/hdf5_sensors.hdf5), or its parent
    houses: str = ""  # directory with train.jsonl.gz and val.jsonl.gz (ProcTHOR-Objaverse houses)
    executable: str = ""  # a local Unity build's executable; "" = ai2thor fetches `commit_id` for `platform`
    executable_platform: str = "CloudRendering"  # what the local build is: CloudRendering (no X) | Linux64 (X)
    commit_id: str = FLARE_STRETCH_COMMIT
    platform: str = "CloudRendering"  # CloudRendering (Vulkan, headless GPU) | Linux64 (an X display)
    x_display: str = ""  # "" = $DISPLAY (Linux64 only)
    gpu_device: int = -1  # -1 = ai2thor's choice (the first of CUDA_VISIBLE_DEVICES, else its default)
    width: int = INTEL_CAMERA_WIDTH
    height: int = INTEL_CAMERA_HEIGHT
    server_timeout: float = MAXIMUM_SERVER_TIMEOUT
    server_start_timeout: float = 300.0
    max_steps: int = 0  # 0 = FLaRe's 500 on train seeds, CHORES' 600 / 1000 (roomvisit) on val/test seeds
    randomize_materials: float = TRAIN_MATERIALS_P  # probability per train episode (never on val/test)
    camera_jitter: bool = True  # calibrate_agent's random camera pitch and FOV per house reset
    initialize_args: dict = field(default_factory=dict)  # overrides of UNITY_INITIALIZE_ARGS
    # Objaverse asset files, <assets_dir>/<id>/<id>.{json,json.gz,msgpack,msgpack.gz} + textures (objathor's
    # layout; pickles refused): before CreateHouse the assets the build lacks are created from them (thor_assets).
    # "" = none: the build must already hold every asset a house uses.
    assets_dir: str = ""
    assets_link_dir: str = ""  # where asset directories are linked for Unity; "" = <build dir>/processed_models

    @classmethod
    def from_yaml(cls, path) -> "ThorSettings":
        from ..configfile import dataclass_from_yaml

        return dataclass_from_yaml(cls, path, "AI2-THOR settings")


def controller_kwargs(s: ThorSettings) -> dict:
    """Arguments of `ai2thor.controller.Controller` for these settings.

    Headless Linux: with `local_executable_path`, ai2thor 5.0.0 wraps the build in `ExternalBuild`, whose platform
    is always Linux64 whatever `platform` says, and Linux64's `launch_env` puts `DISPLAY=x_display` into Unity's
    environment (searching /tmp/.X11-unix when none is given; `None` there makes Popen fail). A CloudRendering
    build renders through Vulkan and never opens that display, so for it any value passes: ":0". For a Linux64
    build a real X display is required. Without `local_executable_path`, `platform=CloudRendering` needs no
    display at all (its launch_env is empty) but ai2thor downloads the build.
    """
    import ai2thor.fifo_server
    import ai2thor.platform

    kw = dict(UNITY_INITIALIZE_ARGS, **s.initialize_args)
    kw.update(width=s.width, height=s.height, server_class=ai2thor.fifo_server.FifoServer,
              server_timeout=s.server_timeout, server_start_timeout=s.server_start_timeout, scene="Procedural")
    if s.gpu_device >= 0:
        kw["gpu_device"] = s.gpu_device
    if s.executable:
        exe = Path(s.executable)
        if not (exe.is_file() and os.access(exe, os.X_OK)):
            raise T.ThorDataError(f"AI2-THOR build: {exe} is not an executable file. Unpack the Stretch build of "
                                  f"commit {FLARE_STRETCH_COMMIT} (FLaRe's; AI2's package index) and point "
                                  "`executable` at its Unity binary, or leave it empty to let ai2thor fetch it")
        kw["local_executable_path"] = str(exe)
        if s.executable_platform == "CloudRendering":
            kw["x_display"] = s.x_display or ":0"  # unused by a CloudRendering build; see the docstring
        elif s.executable_platform == "Linux64":
            display = s.x_display or os.environ.get("DISPLAY", "")
            if not display:
                raise T.ThorDataError("AI2-THOR: a Linux64 build needs an X display (set x_display or DISPLAY, e.g. "
                                      "Xvfb or `ai2thor-xorg start`), or use a CloudRendering build")
            kw["x_display"] = display
        else:
            raise ValueError(f"executable_platform must be CloudRendering or Linux64, got {s.executable_platform!r}")
    else:
        if s.platform not in ai2thor.platform.STR_PLATFORM_MAP:
            raise ValueError(f"platform must be one of {sorted(ai2thor.platform.STR_PLATFORM_MAP)}, got {s.platform!r}")
        kw.update(commit_id=s.commit_id, platform=ai2thor.platform.STR_PLATFORM_MAP[s.platform])
        if s.x_display:
            kw["x_display"] = s.x_display
    return kw


# ------------------------------------------------------------------------------------------ actions
def arm_state(metadata: dict) -> dict:
    """Lift (y) and extension (z) relative to the arm base, as `get_relative_stretch_current_arm_state`."""
    joints = metadata["arm"]["joints"]
    return {"x": joints[-1]["rootRelativePosition"]["x"],
            "y": joints[0]["rootRelativePosition"]["y"] - LIFT_JOINT_OFFSET,
            "z": joints[-1]["rootRelativePosition"]["z"]}


def wrist_yaw(metadata: dict) -> float:
    """`get_arm_wrist_rotation`: the last joint's axis-angle rotation as degrees about y."""
    j = metadata["arm"]["joints"][-1]
    return math.fmod(j["rootRelativeRotation"]["w"] * j["rootRelativeRotation"]["y"], 360)


ARM_DELTAS = {  # action -> (axis, metres); a "small" action is 1/5 of the full one
    "move_arm_up": ("y", ARM_MOVE_CONSTANT), "move_arm_down": ("y", -ARM_MOVE_CONSTANT),
    "move_arm_out": ("z", ARM_MOVE_CONSTANT), "move_arm_in": ("z", -ARM_MOVE_CONSTANT),
    "move_arm_up_small": ("y", ARM_MOVE_CONSTANT / 5), "move_arm_down_small": ("y", -ARM_MOVE_CONSTANT / 5),
    "move_arm_out_small": ("z", ARM_MOVE_CONSTANT / 5), "move_arm_in_small": ("z", -ARM_MOVE_CONSTANT / 5),
}
ROTATIONS = {"rotate_right": AGENT_ROTATION_DEG, "rotate_left": -AGENT_ROTATION_DEG,
             "rotate_right_small": AGENT_ROTATION_DEG / 5, "rotate_left_small": -AGENT_ROTATION_DEG / 5}
TASK_ACTIONS = ("end", "sub_done")  # handled by the task, never sent to the simulator


def action_messages(action: str, metadata: dict) -> list[dict]:
    """The controller steps FLaRe's `StretchController.agent_step` sends for one policy action, given the
    current metadata (arm moves are absolute targets; wrist steps are clamped). Every step carries
    `renderImageSynthesis=False` (`StretchController.step`; FLaRe renders no depth/normals/flow)."""
    if action == "move_ahead":
        msgs = [dict(action="MoveAheadQuick", moveMagnitude=AGENT_MOVEMENT_CONSTANT)]
    elif action == "move_back":
        msgs = [dict(action="MoveBackQuick", moveMagnitude=AGENT_MOVEMENT_CONSTANT)]
    elif action in ROTATIONS:
        msgs = [dict(action="RotateRightQuick", degrees=ROTATIONS[action])]
    elif action in ARM_DELTAS:
        pos = arm_state(metadata)
        axis, delta = ARM_DELTAS[action]
        pos[axis] += delta
        msgs = [dict(action="MoveArm", position=dict(x=pos["x"], y=pos["y"], z=pos["z"]), **ADDITIONAL_ARM_ARGS)]
    elif action in ("wrist_open", "wrist_close"):
        yaw = wrist_yaw(metadata)
        if action == "wrist_open":  # counter-clockwise, at most up to STRETCH_WRIST_BOUND_2 (+360 = 100)
            step = -1 * min(WRIST_ROTATION, abs(yaw - (STRETCH_WRIST_BOUND_2 + 360)))
        else:
            step = min(WRIST_ROTATION, abs(STRETCH_WRIST_BOUND_1 - yaw))
        msgs = [dict(action="RotateWristRelative", yaw=step, **ADDITIONAL_ARM_ARGS)]
    elif action == "pickup":
        msgs = [dict(action="PickupObject")]
    elif action == "dropoff":  # the released object is let fall for 2 s of physics
        msgs = [dict(action="ReleaseObject"), dict(action="AdvancePhysicsStep", simSeconds=2)]
    elif action in TASK_ACTIONS:
        raise ValueError(f"{action!r} is handled by the task, not sent to the simulator")
    else:
        raise ValueError(f"unknown Stretch action {action!r}; known: {STRETCH_ACTIONS}")
    return [dict(m, renderImageSynthesis=False) for m in msgs]


def _signed_wrist_travel(before: float, after: float) -> float:
    """StretchState.signed_travel_distance_wrist: the wrist turns the short way around its forbidden zone."""
    lo, hi = WRIST_FORBIDDEN
    before, after = before % 360, after % 360
    if lo <= after <= hi:
        after = lo if abs(after - lo) < abs(after - hi) else hi
    if after > before:
        return after - before - 360 if (before < lo and after > hi) else after - before
    return after - before + 360 if (before > hi and after < lo) else after - before


def action_success(action: str, before: dict, after: dict, error_message: str) -> bool:
    """`agent_step`'s reported success: pickup always False, dropoff always True, arm/wrist actions need no
    collision and a state change beyond the tolerances, base actions only no collision."""
    if action == "pickup":
        return False
    if action == "dropoff":
        return True
    collided = "collided" in (error_message or "").lower()
    if action in ARM_DELTAS or action in ("wrist_open", "wrist_close"):
        a0, a1 = arm_state(before), arm_state(after)
        p0, p1 = before["agent"]["position"], after["agent"]["position"]
        theta = (after["agent"]["rotation"]["y"] - before["agent"]["rotation"]["y"] + 180) % 360 - 180
        moved = (math.hypot(p1["x"] - p0["x"], p1["z"] - p0["z"]) > math.hypot(BASE_TOLERANCE_XZ, BASE_TOLERANCE_XZ)
                 or abs(theta) > BASE_TOLERANCE_DEG or abs(a1["y"] - a0["y"]) > WRIST_TOLERANCE_YZ
                 or abs(a1["z"] - a0["z"]) > WRIST_TOLERANCE_YZ
                 or abs(_signed_wrist_travel(wrist_yaw(before), wrist_yaw(after))) > WRIST_TOLERANCE_YAW)
        return not collided and moved
    return not collided


def calibration_messages(rng: random.Random, jitter: bool = True) -> list[dict]:
    """`calibrate_agent` after each house reset: camera pitches 27 / 33 degrees and FOV 59 per camera, each
    jittered (np.arange(-2, 2, 0.2) and np.arange(-1, 1, 0.1) choices), gripper openness 30 (open)."""
    pitch = [round(-2 + 0.2 * i, 1) for i in range(20)]
    fov = [round(-1 + 0.1 * i, 1) for i in range(20)]
    j = (lambda xs: rng.choice(xs)) if jitter else (lambda xs: 0.0)
    return [dict(action="RotateCameraMount", degrees=27.0 + j(pitch), secondary=False, renderImage=False),
            dict(action="RotateCameraMount", degrees=33.0 + j(pitch), secondary=True),
            dict(action="ChangeFOV", fieldOfView=INTEL_VERTICAL_FOV + j(fov), camera="FirstPersonCharacter",
                 renderImage=False),
            dict(action="ChangeFOV", fieldOfView=INTEL_VERTICAL_FOV + j(fov), camera="SecondaryCamera",
                 renderImage=False),
            dict(action="SetGripperOpenness", openness=30)]


def prepare_house(house: dict) -> dict:
    """FLaRe's `StretchController.reset` edits to a house before `controller.reset(scene=house)`: navmeshes for
    the agent radii, a default agent pose when missing, camera horizon 0 (pitch comes from RotateCameraMount)."""
    house = copy.deepcopy(house)
    meta = house.setdefault("metadata", {})
    base = {"agentHeight": 1.8, "agentSlope": 10, "agentClimb": 0.5, "voxelSize": 0.1666667}
    meta["navMeshes"] = [{**base, "id": i, "agentRadius": r} for i, r in AGENT_RADIUS_LIST]
    meta.setdefault("agent", {"horizon": 30, "position": {"x": 0, "y": 0.95, "z": 0},
                              "rotation": {"x": 0, "y": 270, "z": 0}, "standing": True})
    meta["agent"]["horizon"] = 0
    return house


def crop_frame(frame: np.ndarray) -> np.ndarray:
    """`navigation_camera` / `manipulation_camera`: drop round(W * 6 / 396) columns per side, keep RGB."""
    cut = round(frame.shape[1] * 6 / 396)
    return frame[:, cut:frame.shape[1] - cut, :3]


# ------------------------------------------------------------------------------------------ environment
class ThorEnv(gym.Env):
    """One CHORES task family in AI2-THOR. `reset(seed)` plays task spec (seed - split start) mod |specs| of the
    seed's split (train seeds: train/ specs and train.jsonl.gz; val/test seeds: val/). Episodes end on `end`
    (success judged there) or at max_steps."""

    metadata = {"render_modes": []}

    def __init__(self, task: str, settings: ThorSettings, cameras, *, embodiment: str = "stretch",
                 dense_reward: bool = False):
        from flare_training.agent import CAMERA_ORDER

        if task not in T.TASK_TYPES:
            raise ValueError(f"AI2-THOR task {task!r} is not one of {sorted(T.TASK_TYPES)}")
        if embodiment != "stretch":
            raise ValueError(f"the AI2-THOR backend drives FLaRe's Stretch agent; embodiment {embodiment!r} is not "
                             "'stretch' (use a bundle of the stretch embodiment)")
        if dense_reward:
            raise ValueError("the AI2-THOR backend has FLaRe's sparse reward only (+10 on a successful `end`)")
        names = tuple(c.name for c in cameras)
        if names not in (CAMERA_ORDER[:1], CAMERA_ORDER):
            raise ValueError(f"AI2-THOR cameras must be {CAMERA_ORDER[:1]} or {CAMERA_ORDER}, the bundle has {names}")
        if not settings.task_specs or not settings.houses:
            raise T.ThorDataError("AI2-THOR settings need `task_specs` and `houses`. " + T.HOW_TO_GET_SPECS + "; "
                                  + T.HOW_TO_GET_HOUSES)
        self.task, self.settings, self.cameras = task, settings, list(cameras)
        self.assets = ThorAssetLoader(settings.assets_dir, settings.assets_link_dir) if settings.assets_dir else None
        self._data: dict[str, tuple[list, dict]] = {}
        self.controller = None
        shape = self.cameras[0].input_shape
        self.observation_space = spaces.Dict({
            "rgb": spaces.Box(0, 255, shape if len(self.cameras) == 1 else (len(self.cameras), *shape), np.uint8),
            "in_hand": spaces.Discrete(2),
            "goal": spaces.Text(max_length=512, min_length=0, charset=GOAL_CHARSET),
            "step": spaces.Discrete(max(T.EVAL_MAX_STEPS.values()) + 1),
        })
        self.action_space = spaces.Discrete(len(STRETCH_ACTIONS))
        self._house_key = None
        self._done = True
        self.last_seed = None

    # ------------------------------------------------------------------ data and controller
    def _split_data(self, split: str):
        if split not in self._data:
            sub = "train" if split == "train" else "val"  # FLaRe evaluates on its val (minival) data
            root = Path(self.settings.task_specs)
            if (root / T.TASK_TYPES[self.task]).is_dir():  # the parent of one <TASK_TYPE> directory per task
                root = root / T.TASK_TYPES[self.task]
            specs = T.load_task_specs(root / sub, self.task)
            houses = T.load_houses(Path(self.settings.houses) / f"{sub}.jsonl.gz", {s.house_index for s in specs})
            self._data[split] = (specs, houses)
        return self._data[split]

    def _start(self):
        from ai2thor.controller import Controller

        cls = asset_hook_controller_class(self.assets) if self.assets is not None else Controller
        try:
            self.controller = cls(**controller_kwargs(self.settings))
        except ThorAssetError as e:
            raise ThorControllerError(str(e)) from e
        except (RuntimeError, TimeoutError, OSError) as e:
            raise ThorControllerError(f"AI2-THOR did not start ({type(e).__name__}: {e}); Unity's log is "
                                      "~/.ai2thor/log/unity.log") from e
        # FLaRe (StretchController.__init__): the manipulation camera is third-party camera 0 at FOV 59
        cams = self.controller.last_event.metadata.get("thirdPartyCameras") or []
        if not cams:
            raise ThorControllerError("AI2-THOR: the build has no manipulation (third-party) camera; agentMode "
                                      "'stretch' needs FLaRe's Stretch build")
        if abs(cams[0]["fieldOfView"] - INTEL_VERTICAL_FOV) >= 2:
            self._step(dict(action="UpdateThirdPartyCamera", thirdPartyCameraId=0, fieldOfView=INTEL_VERTICAL_FOV))

    def _returncode(self):
        server = getattr(self.controller, "server", None)
        proc = getattr(server, "unity_proc", None)
        return None if proc is None else proc.poll()

    def _dead(self, what: str, cause: BaseException | None = None) -> ThorControllerError:
        rc = self._returncode()
        why = (f"the Unity process exited with code {rc}" if rc is not None else
               f"it did not answer within server_timeout={self.settings.server_timeout:g} s ({cause})")
        return ThorControllerError(
            f"AI2-THOR failed while running {what}: {why}. Unity's log: ~/.ai2thor/log/unity.log. The run stops "
            "here; checkpoints already written are kept (continue with `flare-train ppo --resume`).")

    def _step(self, msg: dict, check: bool = False):
        if self.controller is None or self.controller.server is None or self._returncode() is not None:
            raise self._dead(repr(msg.get("action")))
        try:
            event = self.controller.step(dict(msg))
        except (RuntimeError, TimeoutError, OSError) as e:  # ai2thor wraps a broken pipe / dead Unity like this
            raise self._dead(repr(msg.get("action")), e) from e
        if check and not event.metadata["lastActionSuccess"]:
            raise ThorControllerError(f"AI2-THOR: {msg['action']} failed: {event.metadata.get('errorMessage')}")
        return event

    def _reset_house(self, house: dict, rng: random.Random, where: str = ""):
        try:
            event = self.controller.reset(scene=prepare_house(house))
        except ThorAssetError as e:  # the asset loader (before CreateHouse): the build refused an asset action
            raise ThorControllerError(f"{e} ({where})") from e
        except T.ThorDataError:  # an asset file missing or refused (thor_assets): nothing was created
            raise
        except (RuntimeError, TimeoutError, OSError) as e:
            raise self._dead("Reset/Initialize/CreateHouse", e) from e
        # FLaRe ignores reset's event; a house the build could not create (e.g. an asset it lacks) would leave a
        # wrong scene, so it is an error here
        if not event.metadata["lastActionSuccess"]:
            hint = ("" if self.assets is not None else " If the house uses Objaverse assets the build does not hold, "
                    "set `assets_dir` to their files (README, AI2-THOR).")
            raise ThorControllerError(f"AI2-THOR: CreateHouse failed for {where}: "
                                      f"{event.metadata.get('errorMessage')}.{hint}")
        for msg in calibration_messages(rng, self.settings.camera_jitter):
            self._step(dict(msg, renderImageSynthesis=False), check=True)
        # FLaRe hides the magnetic grasp sphere and empties the object filter after every house reset
        self._step(dict(action="ToggleMagnetVisibility", visible=False, renderImageSynthesis=False), check=True)
        self._step(dict(action="SetObjectFilter", objectIds=[], renderImageSynthesis=False), check=True)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None:
            raise ValueError("ThorEnv.reset needs a seed (it selects the task spec)")
        split = seed_split(seed)
        specs, houses = self._split_data(split)
        spec = specs[(seed - SPLITS[split][0]) % len(specs)]
        rng = random.Random(seed)
        if self.controller is None:
            self._start()
        house = houses[spec.house_index]
        # FLaRe skips the house reset between nav-only episodes of one house; manipulation moves objects
        key = ("train" if split == "train" else "val", spec.house_index)  # val houses are another file
        if key != self._house_key or self.task in ("pickup", "fetch"):
            self._reset_house(house, rng, f"house {spec.house_index} of {key[0]}.jsonl.gz")
            self._house_key = key
        p = self.settings.randomize_materials if split == "train" else 0.0
        self._step(dict(action="RandomizeMaterials" if rng.random() < p else "ResetMaterials",
                        renderImageSynthesis=False), check=True)
        ev = self._step(dict(action="Teleport", position=dict(spec.start_position),
                             rotation=dict(x=0, y=spec.start_yaw, z=0), renderImageSynthesis=False))
        if not ev.metadata["lastActionSuccess"]:
            raise ThorControllerError(f"AI2-THOR: teleport to the start pose of {spec.source} failed: "
                                      f"{ev.metadata.get('errorMessage')}")
        self.spec, self.house, self.split, self.last_seed = spec, house, split, seed
        self.max_steps = self.settings.max_steps or (T.TRAIN_MAX_STEPS if split == "train"
                                                     else T.EVAL_MAX_STEPS[self.task])
        self.goal = T.goal_text(spec, rng, house)
        self.steps, self._done = 0, False
        self.marked_rooms: list[str] = []
        self.previous_room = None
        pos = ev.metadata["agent"]["position"]
        first = T.room_of(house, pos)
        self.visited_rooms = {first} if first else set()
        return self._obs(), self._info(False, True)

    def step(self, action):
        if self._done:
            raise RuntimeError("step() called on a finished episode; call reset()")
        a = int(action)
        if not 0 <= a < len(STRETCH_ACTIONS):
            raise ValueError(f"invalid action {action!r}; expected 0..{len(STRETCH_ACTIONS) - 1}")
        name = STRETCH_ACTIONS[a]
        before = self.controller.last_event.metadata
        # tasks/abstract_task.py::step: the room the agent is in before acting (what sub_done marks)
        room = T.room_of(self.house, before["agent"]["position"])
        if room is not None:
            self.previous_room = room
        terminated = success = False
        if name == "end":
            terminated = True
            success = self._judge()
            ok = success
        elif name == "sub_done":  # RoomVisit marks the current room once; elsewhere a failed no-op
            ok = self.task == "roomvisit" and self.previous_room is not None \
                and self.previous_room not in self.marked_rooms
            if ok:
                self.marked_rooms.append(self.previous_room)
        else:
            msgs = action_messages(name, before)
            ev = self._step(msgs[0])  # the reported error is the action's, not the physics step's
            for extra in msgs[1:]:
                self._step(extra)
            after = self.controller.last_event.metadata
            ok = action_success(name, before, after, ev.metadata.get("errorMessage", ""))
            here = T.room_of(self.house, after["agent"]["position"])
            if here:
                self.visited_rooms.add(here)
        self.steps += 1
        truncated = not terminated and self.steps >= self.max_steps
        self._done = terminated or truncated
        reward = T.SUCCESS_REWARD if success else 0.0
        return self._obs(), reward, terminated, truncated, self._info(success, ok)

    def _judge(self) -> bool:
        if self.task == "objectnav":
            ev = self._step(dict(action="GetVisibleObjects", maxDistance=T.OBJECTNAV_MAX_DISTANCE,
                                 renderImageSynthesis=False))
            return T.objectnav_success(self.spec, ev.metadata["actionReturn"])
        if self.task in ("pickup", "fetch"):
            return T.held_target_success(self.spec, self.controller.last_event.metadata["arm"])
        return T.roomvisit_success(self.marked_rooms, self.house)

    def _obs(self) -> dict:
        from flare_policy.preprocess import prepare_frame

        ev = self.controller.last_event
        raw = [ev.frame, ev.third_party_camera_frames[0]][: len(self.cameras)]
        frames = [prepare_frame(np.ascontiguousarray(crop_frame(f)), c) for f, c in zip(raw, self.cameras)]
        rgb = frames[0] if len(frames) == 1 else np.stack(frames)
        return {"rgb": rgb, "in_hand": T.in_hand(ev.metadata["arm"]), "goal": self.goal, "step": self.steps}

    def _info(self, success: bool, last_action_success: bool) -> dict:
        info = {"success": bool(success), "task": self.task, "last_action_success": bool(last_action_success),
                "expert_length": int(self.spec.expert_length), "house_index": self.spec.house_index}
        if self.task == "roomvisit":
            total = len(self.house.get("rooms", [])) or 1
            info.update(rooms_total=total, rooms_marked=len(self.marked_rooms),
                        pct_rooms=len(self.visited_rooms) / total)
        return info

    def close(self):
        if self.controller is not None:
            try:
                self.controller.stop()
            except Exception:  # noqa: BLE001 - already dead: nothing left to stop
                pass
            self.controller = None


def make_thor_env(task: str, *, settings: ThorSettings, cameras, embodiment: str = "stretch",
                  dense_reward: bool = False) -> ThorEnv:
    return ThorEnv(task, settings, cameras, embodiment=embodiment, dense_reward=dense_reward)
