"""Local CHORES data and a fake Unity build for the AI2-THOR backend tests (see tests/fake_thor_unity.py)."""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import h5py
import numpy as np

FAKE_UNITY = Path(__file__).resolve().parent / "fake_thor_unity.py"
MUG = "Mug|surface|1|0"
APPLE = "Apple|surface|2|0"
# two rooms side by side: x in [-1, 1] and [1, 3], z in [-1, 3]
HOUSE = {"rooms": [{"id": "room|1", "roomType": "Kitchen",
                    "floorPolygon": [{"x": -1, "z": -1}, {"x": 1, "z": -1}, {"x": 1, "z": 3}, {"x": -1, "z": 3}]},
                   {"id": "room|2", "roomType": "Bedroom",
                    "floorPolygon": [{"x": 1, "z": -1}, {"x": 3, "z": -1}, {"x": 3, "z": 3}, {"x": 1, "z": 3}]}],
         "objects": [{"id": MUG, "assetId": "Mug_1"}, {"id": APPLE, "assetId": "Apple_1"}],
         "metadata": {"agent": {"position": {"x": 0, "y": 0.9, "z": 0}, "rotation": {"x": 0, "y": 0, "z": 0},
                                "horizon": 30, "standing": True}}}
SCENARIO = {"objects": [{"objectId": MUG, "objectType": "Mug", "position": {"x": 0.0, "y": 0.9, "z": 1.2}},
                        {"objectId": APPLE, "objectType": "Apple", "position": {"x": 2.0, "y": 0.9, "z": -0.5}}],
            "collide_beyond": 2.6}
TASK_TYPES = {"objectnav": "ObjectNavType", "pickup": "PickupType", "fetch": "FetchType", "roomvisit": "RoomVisit"}


def _bytes(s: str, n: int = 1000) -> np.ndarray:
    return np.frombuffer(s.encode().ljust(n, b"\0"), np.uint8)


def write_specs(split_dir: Path, task: str, episodes: list[dict], house_dir: str = "000000") -> None:
    """episodes: {"house_index", "start": (x, y, z, yaw), "expert_length"} -> <split_dir>/<house>/hdf5_sensors.hdf5"""
    d = split_dir / house_dir
    d.mkdir(parents=True, exist_ok=True)
    with h5py.File(d / "hdf5_sensors.hdf5", "w") as f:
        for i, ep in enumerate(episodes):
            g = f.create_group(str(i))
            params = {"task_type": TASK_TYPES[task], "extras": {}}
            if task == "roomvisit":
                params["num_rooms_in_house"] = 2
            else:
                params.update(synsets=[ep.get("synset", "mug.n.04")],
                              broad_synset_to_object_ids={ep.get("synset", "mug.n.04"): [ep.get("target", MUG)]},
                              synset_to_object_ids={ep.get("synset", "mug.n.04"): [ep.get("target", MUG)]})
            g["templated_task_spec"] = _bytes(json.dumps(params))[None]
            g["house_index"] = np.array([ep.get("house_index", 0)])
            x, y, z, yaw = ep.get("start", (0.0, 0.9, 0.0, 0.0))
            g["last_agent_location"] = np.array([[x, y, z, 0.0, yaw, 0.0]] * 3)
            g["last_action_str"] = np.stack([_bytes("m", 200)] * ep.get("expert_length", 3))


def write_houses(path: Path, houses: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        for h in houses:
            f.write(json.dumps(h) + "\n")


def make_data(root: Path, task: str, train_eps=None, val_eps=None) -> tuple[Path, Path]:
    """-> (task_specs dir, houses dir) in FLaRe's layout."""
    specs = root / "specs" / TASK_TYPES[task]
    write_specs(specs / "train", task, train_eps or [{}, {"start": (0.0, 0.9, 0.0, 90.0)}])
    write_specs(specs / "val", task, val_eps or [{}])
    write_houses(root / "houses" / "train.jsonl.gz", [HOUSE])
    write_houses(root / "houses" / "val.jsonl.gz", [HOUSE])
    return specs, root / "houses"


def fake_build(root: Path, scenario: dict | None = None) -> tuple[Path, Path]:
    """An executable that starts the fake Unity with a scenario; -> (executable, action log)."""
    root.mkdir(parents=True, exist_ok=True)
    scen, log = root / "scenario.json", root / "actions.jsonl"
    scen.write_text(json.dumps(SCENARIO if scenario is None else scenario))
    exe = root / "fake-unity"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_UNITY} --scenario {scen} --log {log} \"$@\"\n")
    exe.chmod(0o755)
    return exe, log


def logged_actions(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
