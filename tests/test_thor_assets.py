"""Objaverse assets for AI2-THOR houses (flare_training.envs.thor_assets) against the real ai2thor 5.0.0 Controller
and our fake Unity: before `CreateHouse`, the assets a house uses that the build lacks are created from local
json / msgpack(.gz) files with FLaRe's hook actions; held assets are not sent; pickles are refused unopened;
missing files are named. The fake checks the wiring and the texture paths, not what Unity makes of an asset."""
from __future__ import annotations

import copy
import gzip
import json
import pathlib
import pickle

import msgpack
import pytest

from flare_training.envs import thor_tasks as T
from flare_training.envs.thor import ThorControllerError, ThorEnv, ThorSettings
from flare_training.envs.thor_assets import house_asset_ids, read_asset_file
from test_thor_env import CAMS, since
from thor_fixtures import HOUSE, SCENARIO, TASK_TYPES, fake_build, logged_actions, write_houses, write_specs

OBJ_A = "0a5f1d2c3b4e4f6a8b9c0d1e2f3a4b5c"  # a json asset with thor_metadata.json
OBJ_B = "7e8d9c0b1a2f4e3d5c6b7a8f9e0d1c2b"  # a msgpack.gz asset, child of OBJ_A's object, no thor_metadata.json
OBJ_C = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3"
BUILD_ASSETS = ["Mug_1", "Apple_1"]  # what the fake build holds


def house_with(*chairs) -> dict:
    """HOUSE plus one object per (asset id, child asset ids); an object with assetId "" (upstream drops it)."""
    h = copy.deepcopy(HOUSE)
    for i, (asset, children) in enumerate(chairs):
        h["objects"].append({"id": f"Chair|{i}", "assetId": asset,
                             "children": [{"id": f"Vase|{i}|{j}", "assetId": c} for j, c in enumerate(children)]})
    h["objects"].append({"id": "Wall|decor", "assetId": ""})
    return h


def asset_data(asset_id: str, receptacle: bool = False) -> dict:
    """An objathor asset file's contents (the fields CreateRuntimeAsset reads), textures named three ways."""
    return {"action": "CreateObjectPrefab", "name": asset_id, "receptacleCandidate": receptacle,
            "albedoTexturePath": f"/net/nfs/objaverse/{asset_id}/albedo.jpg", "normalTexturePath": "normal.jpg",
            "emissionTexturePath": "./emission.jpg",
            "vertices": [{"x": 0.0, "y": 0.0, "z": 0.0}, {"x": 0.25, "y": 0.0, "z": 0.0},
                         {"x": 0.0, "y": 0.5, "z": 0.0}],
            "triangles": [0, 1, 2], "normals": [{"x": 0.0, "y": 0.0, "z": -1.0}] * 3,
            "uvs": [{"x": 0.0, "y": 0.0}, {"x": 1.0, "y": 0.0}, {"x": 0.0, "y": 1.0}],
            "colliders": [{"vertices": [{"x": 0.0, "y": 0.0, "z": 0.0}], "triangles": [0, 0, 0]}],
            "physicalProperties": {"mass": 0.5, "drag": 0.0, "angularDrag": 0.05, "useGravity": True,
                                   "isKinematic": False},
            "yRotOffset": 12.5}


def write_asset(assets_dir: pathlib.Path, asset_id: str, ext: str, *, receptacle=False, metadata=None) -> pathlib.Path:
    d = assets_dir / asset_id
    d.mkdir(parents=True, exist_ok=True)
    for tex in ("albedo.jpg", "normal.jpg", "emission.jpg"):
        (d / tex).write_bytes(b"\xff\xd8\xff" + tex.encode())
    data = asset_data(asset_id, receptacle)
    path = d / f"{asset_id}{ext}"
    if ext == ".json":
        path.write_text(json.dumps(data))
    elif ext == ".msgpack":
        path.write_bytes(msgpack.packb(data))
    elif ext == ".msgpack.gz":
        path.write_bytes(gzip.compress(msgpack.packb(data)))
    elif ext == ".json.gz":
        path.write_bytes(gzip.compress(json.dumps(data).encode()))
    if metadata is not None:
        (d / "thor_metadata.json").write_text(json.dumps({"assetMetadata": metadata}))
    return path


class _Trap:
    """Unpickling this touches a marker file: the proof that a .pkl.gz was never unpickled."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def write_trap_pickle(path: pathlib.Path, marker: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(pickle.dumps(_Trap(marker))))


def standard_assets(tmp_path) -> pathlib.Path:
    assets = tmp_path / "objaverse" / "assets"
    write_asset(assets, OBJ_A, ".json", metadata={"primaryProperty": "Stationary",
                                                  "secondaryProperties": ["Receptacle"]})
    write_asset(assets, OBJ_B, ".msgpack.gz", receptacle=True)
    return assets


def open_env(tmp_path, houses, *, task="objectnav", train_eps=None, scenario=None, **settings):
    specs = tmp_path / "data" / "specs" / TASK_TYPES[task]
    write_specs(specs / "train", task, train_eps or [{}])
    write_specs(specs / "val", task, [{}])
    for split in ("train", "val"):
        write_houses(tmp_path / "data" / "houses" / f"{split}.jsonl.gz", houses)
    exe, log = fake_build(tmp_path / "build", scenario or dict(SCENARIO, build_assets=BUILD_ASSETS))
    s = ThorSettings(task_specs=str(specs), houses=str(tmp_path / "data" / "houses"), executable=str(exe),
                     server_timeout=3, **settings)
    return ThorEnv(task, s, CAMS), log


def house_load(msgs) -> list[dict]:
    """The messages of the last house load: from its Reset to its CreateHouse."""
    end = max(i for i, m in enumerate(msgs) if m["action"] == "CreateHouse")
    start = max(i for i, m in enumerate(msgs[:end]) if m["action"] == "Reset")
    return msgs[start:end + 1]


def expected_asset(asset_id, link_dir, annotations, receptacle=False) -> dict:
    a = asset_data(asset_id, receptacle)
    for key, tex in (("albedoTexturePath", "albedo.jpg"), ("normalTexturePath", "normal.jpg"),
                     ("emissionTexturePath", "emission.jpg")):
        a[key] = str(link_dir / asset_id / tex)
    a["annotations"] = annotations
    return a


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)


def test_missing_assets_are_created_before_create_house(tmp_path):
    assets = standard_assets(tmp_path)
    marker = tmp_path / "unpickled"
    write_trap_pickle(assets / OBJ_B / f"{OBJ_B}.pkl.gz", marker)  # beside the msgpack.gz: never read
    house = house_with((OBJ_A, [OBJ_B]))
    env, log = open_env(tmp_path, [house], assets_dir=str(assets))
    try:
        env.reset(seed=0)
        msgs = since(log, 0)
        # Controller start: FLaRe's Initialize hook keeps 200 procedural assets
        first_init = [m["action"] for m in msgs].index("Initialize")
        assert msgs[first_init - 1] == dict(action="DeleteLRUFromProceduralCache", assetLimit=200)
        load = house_load(msgs)
        assert [m["action"] for m in load] == ["Reset", "DeleteLRUFromProceduralCache", "Initialize",
                                               "DeleteLRUFromProceduralCache", "AssetsInDatabase",
                                               "CreateRuntimeAsset", "CreateRuntimeAsset", "CreateHouse"]
        assert load[1] == dict(action="DeleteLRUFromProceduralCache", assetLimit=200)
        assert load[3] == dict(action="DeleteLRUFromProceduralCache", assetLimit=0)  # a new house: cache emptied
        assert load[4] == dict(action="AssetsInDatabase", assetIds=sorted([OBJ_A, OBJ_B, "Apple_1", "Mug_1"]),
                               updateProceduralLRUCache=True)
        link_dir = tmp_path / "build" / "processed_models"  # upstream's <build dir>/processed_models
        assert load[5] == dict(action="CreateRuntimeAsset", asset=expected_asset(
            OBJ_A, link_dir, {"objectType": "Undefined", "primaryProperty": "Stationary",
                              "secondaryProperties": ["Receptacle"]}))
        # no thor_metadata.json: objathor's default, secondaryProperties [] for a receptacleCandidate
        assert load[6] == dict(action="CreateRuntimeAsset", asset=expected_asset(
            OBJ_B, link_dir, {"objectType": "Undefined", "primaryProperty": "CanPickup", "secondaryProperties": []},
            receptacle=True))
        for a in (OBJ_A, OBJ_B):
            assert (link_dir / a).is_symlink() and (link_dir / a).resolve() == (assets / a).resolve()
        assert env.assets.created == [OBJ_A, OBJ_B] and not marker.exists()
        assert env.controller.last_event.metadata["lastActionSuccess"]  # the episode runs in the created house
        env.step(0)
    finally:
        env.close()


def test_assets_the_build_holds_are_not_sent(tmp_path):
    assets = standard_assets(tmp_path)
    env, log = open_env(tmp_path, [house_with((OBJ_A, [OBJ_B]))], task="pickup", assets_dir=str(assets))
    try:
        env.reset(seed=0)
        n = len(logged_actions(log))
        env.reset(seed=0)  # manipulation: the same house is rebuilt; its assets are now in the build's cache
        assert [m["action"] for m in house_load(since(log, n))] == [
            "Reset", "DeleteLRUFromProceduralCache", "Initialize", "AssetsInDatabase", "CreateHouse"]
        assert env.assets.created == [OBJ_A, OBJ_B]
    finally:
        env.close()
    # a build that holds the Objaverse assets itself: no asset file is needed, nothing is created
    empty = tmp_path / "empty_assets"
    empty.mkdir()
    env, log = open_env(tmp_path / "held", [house_with((OBJ_A, [OBJ_B]))], assets_dir=str(empty),
                        scenario=dict(SCENARIO, build_assets=BUILD_ASSETS + [OBJ_A, OBJ_B]))
    try:
        env.reset(seed=0)
        actions = [m["action"] for m in house_load(since(log, 0))]
        assert "AssetsInDatabase" in actions and "CreateRuntimeAsset" not in actions
        assert env.assets.created == []
    finally:
        env.close()


def test_a_new_house_empties_the_cache_and_recreates(tmp_path):
    assets = standard_assets(tmp_path)
    write_asset(assets, OBJ_C, ".msgpack")
    houses = [house_with((OBJ_A, [OBJ_B])), house_with((OBJ_C, [OBJ_B]))]
    env, log = open_env(tmp_path, houses, train_eps=[{"house_index": 0}, {"house_index": 1}],
                        assets_dir=str(assets))
    try:
        env.reset(seed=0)
        env.reset(seed=1)  # house 1 uses OBJ_C: FLaRe empties the procedural cache, so OBJ_B is created again
        env.reset(seed=2)  # house 0 again: OBJ_A is not among house 1's assets: emptied and recreated again
        assert env.assets.created == [OBJ_A, OBJ_B, OBJ_B, OBJ_C, OBJ_A, OBJ_B]
        assert [m["assetLimit"] for m in since(log, 0) if m["action"] == "DeleteLRUFromProceduralCache"] == \
            [200, 200, 0, 200, 0, 200, 0]
    finally:
        env.close()


def test_pickled_asset_is_refused_unopened(tmp_path):
    assets = tmp_path / "objaverse" / "assets"
    write_asset(assets, OBJ_A, ".json")
    marker = tmp_path / "unpickled"
    write_trap_pickle(assets / OBJ_B / f"{OBJ_B}.pkl.gz", marker)
    env, log = open_env(tmp_path, [house_with((OBJ_A, [OBJ_B]))], assets_dir=str(assets))
    try:
        with pytest.raises(T.ThorDataError, match=rf"{OBJ_B}.*{OBJ_B}\.pkl\.gz is a pickle.*never unpickles"
                                                  r".*\.msgpack\.gz.*convert_to_unity_loadable_v2"):
            env.reset(seed=0)
        actions = [m["action"] for m in since(log, 0)]
        # every file is checked before anything is created: OBJ_A was not sent either, nor the house
        assert actions[-1] == "AssetsInDatabase" and "CreateRuntimeAsset" not in actions
        assert actions.count("CreateHouse") == 0 and not marker.exists()
    finally:
        env.close()
    plain = tmp_path / "x" / "x.pkl"
    write_trap_pickle(plain, marker)
    with pytest.raises(T.ThorDataError, match="never unpickles"):
        read_asset_file(plain)
    assert not marker.exists()


def test_missing_assets_are_named_with_the_path_looked_at(tmp_path):
    assets = tmp_path / "objaverse" / "assets"
    write_asset(assets, OBJ_A, ".json")
    env, log = open_env(tmp_path, [house_with((OBJ_A, [OBJ_B]))], assets_dir=str(assets))
    try:
        with pytest.raises(T.ThorDataError, match=rf"{OBJ_B}.*no directory {assets / OBJ_B}.*download_assets"):
            env.reset(seed=0)
        (assets / OBJ_B).mkdir()
        with pytest.raises(T.ThorDataError, match=rf"{OBJ_B}.*none of {OBJ_B}\.json, .*{OBJ_B}\.msgpack\.gz "
                                                  rf"in {assets / OBJ_B}"):
            env.reset(seed=0)
        assert "CreateRuntimeAsset" not in [m["action"] for m in since(log, 0)]
    finally:
        env.close()
    with pytest.raises(T.ThorDataError, match=rf"assets_dir {tmp_path / 'nowhere'} is not a directory.*"
                                              r"objathor\.dataset\.download_assets"):
        open_env(tmp_path / "again", [HOUSE], assets_dir=str(tmp_path / "nowhere"))


def test_without_assets_dir_a_missing_asset_fails_create_house(tmp_path):
    env, log = open_env(tmp_path, [house_with((OBJ_A, []))])
    try:
        with pytest.raises(ThorControllerError, match=rf"CreateHouse failed for house 0 of train\.jsonl\.gz: "
                                                      rf".*'{OBJ_A}' is not in the asset database.*assets_dir"):
            env.reset(seed=0)
        actions = [m["action"] for m in since(log, 0)]
        assert "AssetsInDatabase" not in actions and "DeleteLRUFromProceduralCache" not in actions
    finally:
        env.close()


def test_bad_assets_and_a_refusing_build(tmp_path):
    assets = standard_assets(tmp_path)
    env, log = open_env(tmp_path, [house_with((OBJ_A, [OBJ_B]))], assets_dir=str(assets),
                        scenario=dict(SCENARIO, build_assets=BUILD_ASSETS, refuse_assets=[OBJ_B]))
    try:
        with pytest.raises(ThorControllerError, match=rf"CreateRuntimeAsset failed for Objaverse asset '{OBJ_B}' "
                                                      rf"\(.*{OBJ_B}\.msgpack\.gz\).*refused by the scenario"):
            env.reset(seed=0)
    finally:
        env.close()
    (assets / OBJ_A / "normal.jpg").unlink()
    env, log = open_env(tmp_path / "tex", [house_with((OBJ_A, []))], assets_dir=str(assets))
    try:
        with pytest.raises(T.ThorDataError, match=rf"{OBJ_A}.*normalTexturePath normal\.jpg is not in"):
            env.reset(seed=0)
    finally:
        env.close()
    bad = tmp_path / "bad" / "assets"
    p = write_asset(bad, OBJ_C, ".json")
    p.write_text(json.dumps(dict(asset_data(OBJ_A))))  # a file that names another asset
    env, log = open_env(tmp_path / "name", [house_with((OBJ_C, []))], assets_dir=str(bad))
    try:
        with pytest.raises(T.ThorDataError, match=rf"names itself '{OBJ_A}', the house asks for '{OBJ_C}'"):
            env.reset(seed=0)
    finally:
        env.close()


def test_asset_ids_and_file_formats(tmp_path):
    h = house_with((OBJ_A, [OBJ_B]), (OBJ_B, []))
    h["objects"][-3]["children"][0]["children"] = [{"id": "deep", "assetId": OBJ_C}]
    assert house_asset_ids(h) == sorted(["Apple_1", "Mug_1", OBJ_A, OBJ_B, OBJ_C])  # recursive, "" dropped, unique
    assert house_asset_ids({"rooms": []}) == []
    for ext in (".json", ".json.gz", ".msgpack", ".msgpack.gz"):
        assert read_asset_file(write_asset(tmp_path / ext, OBJ_A, ext)) == asset_data(OBJ_A), ext
    broken = tmp_path / f"{OBJ_A}.msgpack.gz"
    broken.write_bytes(gzip.compress(b"\xc1"))
    with pytest.raises(T.ThorDataError, match="not a readable asset file"):
        read_asset_file(broken)
    listy = tmp_path / "l.json"
    listy.write_text("[1, 2]")
    with pytest.raises(T.ThorDataError, match="holds a mapping"):
        read_asset_file(listy)
    s = ThorSettings.from_yaml(pathlib.Path(__file__).resolve().parents[1] / "training/configs/thor_chores.yaml")
    assert s.assets_dir.endswith("/assets") and s.assets_link_dir == ""
