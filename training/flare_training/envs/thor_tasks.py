"""CHORES tasks for the AI2-THOR backend as pure functions of event metadata, plus the local files they read.

Upstream (JiahengHu/FLaRe 656f46a): success rules from `tasks/object_nav_task.py`, `tasks/fetch_task.py`,
`tasks/pickup_task.py` (a FetchTask), `tasks/room_visit_task.py`; the episode loop from `tasks/abstract_task.py`;
task specs from `utils/data_utils.py::load_hdf5_sensor`; houses from `{subset}.jsonl.gz`
(`utils/data_utils.py::LazyJsonHouses`); goal templates from `utils/task_spec_to_instruction.py` and
`utils/constants/template_verbs.py`; horizons from `online_evaluation/max_episode_configs.py`.

Nothing here talks to the simulator: `thor.ThorEnv` queries it and hands the results to these functions.
"""
from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SUCCESS_REWARD = 10.0  # FLaRe RewardConfig.goal_success_reward; every other term is 0 (sparse)
OBJECTNAV_MAX_DISTANCE = 2.0  # metres, nav camera (ObjectNavTask.successful_if_done)

# our task name -> CHORES task_type (the key of a templated task spec)
TASK_TYPES = {"objectnav": "ObjectNavType", "pickup": "PickupType", "fetch": "FetchType",
              "roomvisit": "RoomVisit"}
# evaluation horizons (online_evaluation/max_episode_configs.py); FLaRe trains with 500
EVAL_MAX_STEPS = {"objectnav": 600, "pickup": 600, "fetch": 600, "roomvisit": 1000}
TRAIN_MAX_STEPS = 500

GOTO_VERBS = ("go to", "locate", "find", "search for", "navigate to")
PICKUP_VERBS = ("pick up", "take", "grab", "grasp", "clutch", "hold")

HOW_TO_GET_SPECS = ("SPOC/FLaRe training data: `python -m scripts.download_training_data --save_dir DIR --types astar` "
                    "in JiahengHu/FLaRe gives DIR/astar_type/<TASK_TYPE>/{train,val}/<house>/hdf5_sensors.hdf5")
HOW_TO_GET_HOUSES = ("ProcTHOR-Objaverse houses: `python -m scripts.download_objaverse_houses --save_dir DIR --subset "
                     "train` (and `--subset val`) in JiahengHu/FLaRe gives DIR/train.jsonl.gz and DIR/val.jsonl.gz")


class ThorDataError(FileNotFoundError):
    """A task-spec or house file that is missing or unreadable, with how to obtain it."""


@dataclass
class ThorTaskSpec:
    """One CHORES episode: house, start pose, target and the goal text (SPOC's TaskSpec)."""
    task_type: str
    house_index: int
    start_position: dict  # {"x", "y", "z"}
    start_yaw: float
    params: dict = field(default_factory=dict)  # the templated task spec (synsets, broad_synset_to_object_ids, ...)
    expert_length: int = -1  # shortest-path expert length when the spec carries one (SEL); -1 = unknown
    source: str = ""

    @property
    def target_synset(self) -> str | None:
        syn = self.params.get("synsets") or []
        return syn[0] if syn else None

    def target_object_ids(self) -> set[str]:
        """Objects that count as the target: every instance of the target synset and its hyponyms."""
        broad = self.params.get("broad_synset_to_object_ids") or {}
        return set(broad.get(self.target_synset, []))


# ------------------------------------------------------------------------------------------ success rules
def objectnav_success(spec: ThorTaskSpec, visible_object_ids) -> bool:
    """ObjectNav: an instance of the target synset is among the objects visible in the navigation camera
    within 2 m (`GetVisibleObjects(maxDistance=2)`'s actionReturn)."""
    return bool(spec.target_object_ids() & set(visible_object_ids or ()))


def held_target_success(spec: ThorTaskSpec, arm_metadata: dict) -> bool:
    """PickUp / Fetch: an object of the target synset is held (`metadata["arm"]["heldObjects"]`)."""
    return bool(spec.target_object_ids() & set((arm_metadata or {}).get("heldObjects") or ()))


def in_hand(arm_metadata: dict) -> int:
    """The policy's `an_object_is_in_hand` input."""
    return int(bool((arm_metadata or {}).get("heldObjects")))


def point_in_polygon(x: float, z: float, polygon) -> bool:
    """Even-odd rule on the floor plane; polygon: [{"x", "z"}, ...] (a ProcTHOR room's floorPolygon)."""
    inside = False
    n = len(polygon)
    for i in range(n):
        a, b = polygon[i], polygon[(i + 1) % n]
        if (a["z"] > z) != (b["z"] > z):
            cross = a["x"] + (z - a["z"]) * (b["x"] - a["x"]) / (b["z"] - a["z"])
            if x < cross:
                inside = not inside
    return inside


def room_of(house: dict, position: dict) -> str | None:
    """The id of the room whose floor polygon contains the agent position, or None (e.g. in a doorway)."""
    for room in house.get("rooms", []):
        if point_in_polygon(position["x"], position["z"], room.get("floorPolygon", [])):
            return room["id"]
    return None


def roomvisit_success(marked_rooms, house: dict) -> bool:
    """RoomVisit: every room of the house was marked by a `sub_done` issued inside it."""
    return len(set(marked_rooms)) == len(house.get("rooms", []))


# ------------------------------------------------------------------------------------------ goal text
def _noun(synset: str) -> str:
    """The head lemma of a WordNet synset name ("mug.n.04" -> "mug", "alarm_clock.n.01" -> "alarm clock").
    SPOC picks a 'best lemma' from WordNet; the head lemma is the same word for most CHORES targets."""
    return synset.split(".")[0].replace("_", " ")


def _with_article(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def goal_text(spec: ThorTaskSpec, rng: random.Random, house: dict | None = None) -> str:
    """The natural-language goal, from SPOC's templates (lower case, like its `normalize`). The spec's own
    `natural_language_spec` wins when it has one."""
    if spec.params.get("natural_language_spec"):
        return str(spec.params["natural_language_spec"])
    if spec.task_type == "RoomVisit":
        n = spec.params.get("num_rooms_in_house") or len((house or {}).get("rooms", []))
        return (f"go to all {n} rooms in the house. indicate when you have seen a new room and when you are done")
    synset = spec.target_synset
    if synset is None:
        raise ThorDataError(f"{spec.source}: task spec has no 'synsets' (target) for {spec.task_type}")
    obj = _noun(synset)
    if spec.task_type == "ObjectNavType":
        return f"{rng.choice(GOTO_VERBS)} {_with_article(obj)}"
    if spec.task_type == "PickupType":
        return f"{rng.choice(PICKUP_VERBS)} {_with_article(obj)}"
    if spec.task_type == "FetchType":
        return f"{rng.choice(GOTO_VERBS)} {_with_article(obj)} and {rng.choice(PICKUP_VERBS)} that {obj}"
    raise ThorDataError(f"{spec.source}: task type {spec.task_type!r} is not one of {sorted(TASK_TYPES.values())}")


# ------------------------------------------------------------------------------------------ files
def _bytes_to_str(row: np.ndarray) -> str:
    """A NUL-padded uint8 row (SPOC `convert_string_to_byte`) -> str."""
    return np.asarray(row, dtype=np.uint8).tobytes().split(b"\0", 1)[0].decode("utf-8")


def read_hdf5_task_specs(path: Path) -> list[ThorTaskSpec]:
    """Every episode group of one `hdf5_sensors.hdf5`: templated_task_spec (JSON), house_index and the first
    `last_agent_location` row (x, y, z, _, yaw, ...) as the start pose (FLaRe `load_hdf5_sensor`)."""
    import h5py

    specs = []
    try:
        with h5py.File(path, "r") as f:
            for key in sorted(f.keys(), key=lambda k: (len(k), k)):
                g = f[key]
                missing = [k for k in ("templated_task_spec", "house_index", "last_agent_location") if k not in g]
                if missing:
                    raise ThorDataError(f"{path}: episode {key!r} lacks {missing} (is this a SPOC "
                                        f"hdf5_sensors.hdf5?). {HOW_TO_GET_SPECS}")
                params = json.loads(_bytes_to_str(g["templated_task_spec"][0]))
                loc = np.asarray(g["last_agent_location"][0], dtype=np.float64)
                exp = int(g["expert_length"][0]) if "expert_length" in g else (
                    len(g["last_action_str"]) if "last_action_str" in g else -1)
                specs.append(ThorTaskSpec(
                    task_type=str(params.get("task_type", "")), house_index=int(g["house_index"][0]),
                    start_position={"x": float(loc[0]), "y": float(loc[1]), "z": float(loc[2])},
                    start_yaw=float(loc[4]), params=params, expert_length=exp, source=f"{path}:{key}"))
    except OSError as e:
        raise ThorDataError(f"{path}: not a readable HDF5 file ({e}). {HOW_TO_GET_SPECS}") from None
    return specs


def load_task_specs(split_dir, task: str) -> list[ThorTaskSpec]:
    """All task specs of one split directory (`<dir>/<house>/hdf5_sensors.hdf5`, houses in sorted order, as
    FLaRe's `Hdf5TaskSpecs`), keeping those of `task`. Raises ThorDataError naming what is missing."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise ThorDataError(f"task specs: {split_dir} is not a directory. {HOW_TO_GET_SPECS}")
    files = sorted(split_dir.glob("*/hdf5_sensors.hdf5"))
    if not files:
        raise ThorDataError(f"task specs: no */hdf5_sensors.hdf5 under {split_dir}. {HOW_TO_GET_SPECS}")
    want = TASK_TYPES[task]
    specs = [s for p in files for s in read_hdf5_task_specs(p)]
    kept = [s for s in specs if s.task_type == want]
    if not kept:
        types = sorted({s.task_type for s in specs})
        raise ThorDataError(f"task specs: {split_dir} has no {want} episodes (found {types}); point the task "
                            f"specs at the <TASK_TYPE> directory for {task!r}")
    return kept


def load_houses(path, indices) -> dict[int, dict]:
    """The houses (lines of a ProcTHOR `jsonl.gz`, 0-based) with the given indices, read in one pass."""
    path = Path(path)
    if not path.is_file():
        raise ThorDataError(f"houses: {path} does not exist. {HOW_TO_GET_HOUSES}")
    want = set(int(i) for i in indices)
    out: dict[int, dict] = {}
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i in want:
                    out[i] = json.loads(line)
                    if len(out) == len(want):
                        break
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ThorDataError(f"houses: {path} is not a readable jsonl.gz ({e}). {HOW_TO_GET_HOUSES}") from None
    lost = sorted(want - set(out))
    if lost:
        raise ThorDataError(f"houses: {path} has no line(s) {lost[:5]}{'...' if len(lost) > 5 else ''} that the "
                            "task specs refer to (train specs need train.jsonl.gz, val specs val.jsonl.gz)")
    return out
