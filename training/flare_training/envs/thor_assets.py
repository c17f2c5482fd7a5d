"""Objaverse assets of ProcTHOR-Objaverse houses, created in the AI2-THOR build before `CreateHouse`.

A ProcTHOR-Objaverse house references Objaverse objects by `assetId`; a Unity build only holds THOR's own assets.
FLaRe creates the missing ones at run time through the action hook of its pinned ai2thor (PyPI's 5.0.0 has no
`ai2thor.hooks`, nor the Controller's `action_hook_runner`). `AssetHookController` adds the same interception to
5.0.0's Controller and `ThorAssetLoader` does what FLaRe's hook does, from the upstream code read here:

- JiahengHu/FLaRe 656f46a `utils/constants/stretch_initialization_utils.py`: `_ACTION_HOOK_RUNNER =
  ProceduralAssetHookRunnerResetOnNewHouse(asset_directory=OBJAVERSE_ASSETS_DIR, asset_symlink=True,
  asset_limit=200)`; its `Initialize` hook sends `DeleteLRUFromProceduralCache(assetLimit=200)`, its `CreateHouse`
  hook sends `DeleteLRUFromProceduralCache(assetLimit=0)` when the house uses an asset the previous house did not,
  then `create_assets_if_not_exist(..., copy_to_dir=<build dir>/processed_models, load_file_in_unity=False)`.
- allenai/ai2thor `ai2thor/hooks/procedural_asset_hook.py` (3f046e19): hook methods run "before running
  controller.step" of the action they are named after; `get_all_asset_ids_recursively` (objects and their
  `children`, "" dropped); `create_assets_if_not_exist` = `AssetsInDatabase(assetIds, updateProceduralLRUCache=True)`,
  whose actionReturn maps each id to whether the build holds it, then for each missing id `create_assets`:
  `CreateRuntimeAsset(asset=<the asset file's contents, texture paths changed, annotations added>)`.
- allenai/objathor `objathor/asset_conversion/util.py` (c75cc85e): the asset file is `<assets_dir>/<id>/<id><ext>`,
  ext searched in the order .json, .json.gz, .msgpack, .msgpack.gz, .pkl.gz (`get_existing_thor_asset_file_path`);
  `create_runtime_asset_file` links `<copy_to_dir>/<id>` to the asset directory; `change_asset_paths` points the
  albedo / normal (and, when present, metallicSmoothness / emission) textures at `<copy_to_dir>/<name>/<file>`;
  `add_default_annotations` takes primaryProperty / secondaryProperties from `<id>/thor_metadata.json`.
  FLaRe's README: `python -m objathor.dataset.download_assets --version 2023_07_28 --path DIR` gives
  `DIR/2023_07_28/assets/<id>/{<id>.pkl.gz, albedo.jpg, normal.jpg, emission.jpg, thor_metadata.json}`.

Differences, on purpose: pickled asset files (`.pkl.gz`, what objathor downloads) are refused, never unpickled
(unpickling runs code); convert them once to msgpack (FLaRe's `utils/convert_to_unity_loadable_v2.py`). `.json.gz`
is read as gzip'd JSON (objathor's reader returns `json.dumps(bytes)` there, which fails). Assets are checked
before anything is sent (file, name, textures) and a failed `CreateRuntimeAsset` raises instead of a warning. The
newest upstream hook also sends an empty `CreateRuntimeAssets` batch after the per-asset actions (its
`if len(dict)` is always true); it creates nothing and is left out. FLaRe's hook object is one per process;
here it is one per controller. What the Unity side does with these actions was not read (only the Python side):
none of this has run against a real build.
"""
from __future__ import annotations

import gzip
import json
import os
import uuid
from pathlib import Path

from .thor_tasks import ThorDataError


class ThorAssetError(RuntimeError):
    """The AI2-THOR build refused an action of the asset loader (message: which asset and why)."""


ASSET_LIMIT = 200  # FLaRe's asset_limit: the procedural-asset LRU cache size kept at every Initialize
LINK_DIR_NAME = "processed_models"  # ProceduralAssetHookRunner(target_dir="processed_models"), under the build dir
READABLE_EXTENSIONS = (".json", ".json.gz", ".msgpack", ".msgpack.gz")  # objathor's search order, pickle left out
PICKLE_EXTENSIONS = (".pkl.gz", ".pkl")
REQUIRED_TEXTURES = ("albedoTexturePath", "normalTexturePath")  # change_asset_paths indexes these
OPTIONAL_TEXTURES = ("metallicSmoothnessTexturePath", "emissionTexturePath")  # rewritten when present
HOOKED_ACTIONS = ("Initialize", "CreateHouse")
HOW_TO_GET_ASSETS = ("Objaverse assets: `python -m objathor.dataset.download_assets --version 2023_07_28 --path DIR` "
                     "(FLaRe's README), then set `assets_dir: DIR/2023_07_28/assets` and convert the pickled files "
                     "to msgpack (see README, AI2-THOR)")
HOW_TO_CONVERT = ("Convert it once, where you trust the file, to .msgpack.gz: in FLaRe's environment `python -m "
                  "utils.convert_to_unity_loadable_v2 --asset_source_dir ASSETS_DIR --target_extension .msgpack.gz` "
                  "(all assets), or with objathor `save_thor_asset_file(load_existing_thor_asset_file(DIR, ID), "
                  "'DIR/ID.msgpack.gz')` (objathor.asset_conversion.util); see README, AI2-THOR")


def house_asset_ids(house: dict) -> list[str]:
    """Every `assetId` of the house's objects and, recursively, their `children`; "" dropped; sorted
    (upstream: `get_all_asset_ids_recursively`, unordered)."""
    ids: set[str] = set()
    stack = list(house.get("objects") or [])
    while stack:
        obj = stack.pop()
        if obj.get("assetId"):
            ids.add(obj["assetId"])
        stack.extend(obj.get("children") or [])
    return sorted(ids)


def find_asset_file(assets_dir: Path, asset_id: str) -> Path:
    """`<assets_dir>/<id>/<id><ext>` for the first readable ext; a pickle alone, or nothing, is an error."""
    d = Path(assets_dir) / asset_id
    if not d.is_dir():
        raise ThorDataError(f"Objaverse asset {asset_id!r}: no directory {d} (assets_dir {assets_dir}). "
                            + HOW_TO_GET_ASSETS)
    for ext in READABLE_EXTENSIONS:
        p = d / f"{asset_id}{ext}"
        if p.is_file():
            return p
    for ext in PICKLE_EXTENSIONS:
        p = d / f"{asset_id}{ext}"
        if p.is_file():
            raise ThorDataError(f"Objaverse asset {asset_id!r}: {p} is a pickle, and this project never unpickles "
                                f"(loading a pickle can run any code). {HOW_TO_CONVERT}")
    looked = ", ".join(f"{asset_id}{e}" for e in READABLE_EXTENSIONS)
    raise ThorDataError(f"Objaverse asset {asset_id!r}: none of {looked} in {d}. " + HOW_TO_GET_ASSETS)


def read_asset_file(path: Path) -> dict:
    """The asset dict of a .json / .json.gz / .msgpack / .msgpack.gz file (never a pickle)."""
    import msgpack  # ai2thor's own dependency (its FIFO metadata is msgpack)

    path = Path(path)
    name = path.name
    if name.endswith(PICKLE_EXTENSIONS):
        raise ThorDataError(f"{path} is a pickle, and this project never unpickles. {HOW_TO_CONVERT}")
    try:
        if name.endswith(".msgpack.gz"):
            data = msgpack.unpackb(gzip.decompress(path.read_bytes()))
        elif name.endswith(".msgpack"):
            data = msgpack.unpackb(path.read_bytes())
        elif name.endswith(".json.gz"):
            data = json.loads(gzip.decompress(path.read_bytes()))
        elif name.endswith(".json"):
            data = json.loads(path.read_text())
        else:
            raise ThorDataError(f"{path}: not an asset file ({', '.join(READABLE_EXTENSIONS)})")
    except (OSError, ValueError, msgpack.UnpackException) as e:
        if isinstance(e, ThorDataError):
            raise
        raise ThorDataError(f"{path} is not a readable asset file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise ThorDataError(f"{path}: an asset file holds a mapping (name, vertices, textures...), "
                            f"got {type(data).__name__}")
    return data


def asset_annotations(asset: dict, asset_dir: Path) -> dict:
    """objathor's `add_default_annotations`: from `thor_metadata.json` when there is one, else "CanPickup" with
    secondaryProperties [] for a receptacleCandidate and ["Receptacle"] otherwise (upstream's rule, as written)."""
    md_path = Path(asset_dir) / "thor_metadata.json"
    if not md_path.is_file():
        return {"objectType": "Undefined", "primaryProperty": "CanPickup",
                "secondaryProperties": [] if asset.get("receptacleCandidate", False) else ["Receptacle"]}
    try:
        md = json.loads(md_path.read_text())["assetMetadata"]
        return {"objectType": "Undefined", "primaryProperty": md["primaryProperty"],
                "secondaryProperties": md["secondaryProperties"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ThorDataError(f"{md_path}: expected assetMetadata.primaryProperty and .secondaryProperties "
                            f"({type(e).__name__}: {e})") from None


def runtime_asset(asset_id: str, file: Path, link_dir: Path) -> dict:
    """The `asset` argument of `CreateRuntimeAsset` for one asset file: its contents with the texture paths
    pointed at `<link_dir>/<id>/<texture file>` (where `link_asset_dir` links the asset directory) and the
    annotations of `asset_annotations`. Everything else (the legacy "action": "CreateObjectPrefab" key, vertices,
    colliders...) is passed as the file has it."""
    asset = read_asset_file(file)
    if asset.get("name") != asset_id:
        raise ThorDataError(f"{file}: the asset names itself {asset.get('name')!r}, the house asks for {asset_id!r}")
    for key in REQUIRED_TEXTURES + OPTIONAL_TEXTURES:
        if key not in asset:
            if key in REQUIRED_TEXTURES:
                raise ThorDataError(f"{file}: no {key} (an objathor asset has albedo and normal textures)")
            continue
        texture = os.path.basename(str(asset[key]))
        if key in REQUIRED_TEXTURES and not (file.parent / texture).is_file():
            raise ThorDataError(f"Objaverse asset {asset_id!r}: its {key} {texture} is not in {file.parent}")
        asset[key] = str(Path(link_dir) / asset_id / texture)
    asset["annotations"] = asset_annotations(asset, file.parent)
    return asset


def link_asset_dir(asset_dir: Path, link_dir: Path, asset_id: str) -> Path:
    """`<link_dir>/<id>` -> the asset directory (objathor's `create_runtime_asset_file`, asset_symlink=True).
    A link elsewhere is replaced atomically (several envs may share one build); a real directory is left alone
    and reported (upstream deletes it)."""
    link = Path(link_dir) / asset_id
    target = Path(asset_dir).resolve()
    if link.is_symlink() and link.resolve() == target:
        return link
    if link.exists() and not link.is_symlink():
        raise ThorDataError(f"Objaverse asset {asset_id!r}: {link} exists and is not a link to {target}; remove it "
                            "(the asset loader links asset directories there)")
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.parent / f".{asset_id}.{uuid.uuid4().hex}.tmp"
    os.symlink(target, tmp)
    os.replace(tmp, link)
    return link


class ThorAssetLoader:
    """FLaRe's `ProceduralAssetHookRunnerResetOnNewHouse` over local asset files: `before(action, controller)` runs
    before the controller sends `Initialize` and `CreateHouse` (see `AssetHookController`)."""

    def __init__(self, assets_dir, link_dir: str = "", asset_limit: int = ASSET_LIMIT):
        self.assets_dir = Path(assets_dir)
        if not self.assets_dir.is_dir():
            raise ThorDataError(f"assets_dir {self.assets_dir} is not a directory. " + HOW_TO_GET_ASSETS)
        self.link_dir = Path(link_dir) if link_dir else None
        self.asset_limit = asset_limit
        self.last_asset_ids: set[str] = set()
        self.created: list[str] = []  # every asset id this loader created, in order (for logs and tests)

    def link_dir_for(self, controller) -> Path:
        """`link_dir`, else `<build dir>/processed_models` as upstream (`controller._build.base_dir`; ai2thor
        5.0.0's ExternalBuild has no base_dir: the executable's directory)."""
        if self.link_dir is not None:
            return self.link_dir
        build = controller._build
        base = getattr(build, "base_dir", None) or os.path.dirname(os.path.abspath(build.executable_path))
        return Path(base) / LINK_DIR_NAME

    def _send(self, controller, msg: dict):
        try:
            event = controller.step(dict(msg))
        except ValueError as e:  # ai2thor raises ValueError for InvalidAction / InvalidArgument / MissingArguments
            raise ThorAssetError(f"AI2-THOR: the build refused {msg['action']} ({e}); Objaverse houses need a build "
                                 "with runtime assets, e.g. FLaRe's Stretch build") from e
        return event

    def before(self, action: str, msg: dict, controller) -> None:
        if action == "Initialize":
            if self.asset_limit > 0:
                self._send(controller, dict(action="DeleteLRUFromProceduralCache", assetLimit=self.asset_limit))
        elif action == "CreateHouse":
            self.before_create_house(msg.get("house") or {}, controller)

    def before_create_house(self, house: dict, controller) -> list[str]:
        """Create the house's assets the build lacks; -> the ids created."""
        ids = house_asset_ids(house)
        if not set(ids) <= self.last_asset_ids:  # a new house: empty the procedural cache (FLaRe's ResetOnNewHouse)
            self._send(controller, dict(action="DeleteLRUFromProceduralCache", assetLimit=0))
            self.last_asset_ids = set(ids)
        ev = self._send(controller, dict(action="AssetsInDatabase", assetIds=ids, updateProceduralLRUCache=True))
        held = ev.metadata.get("actionReturn")
        if not ev.metadata["lastActionSuccess"] or not isinstance(held, dict):
            raise ThorAssetError(f"AI2-THOR: AssetsInDatabase failed ({ev.metadata.get('errorMessage') or held!r}); "
                                 "Objaverse houses need a build with runtime assets, e.g. FLaRe's Stretch build")
        missing = [i for i in ids if held.get(i) is not True]
        files = {i: find_asset_file(self.assets_dir, i) for i in missing}  # every file error before any action
        link_dir = self.link_dir_for(controller)
        for asset_id in missing:
            asset = runtime_asset(asset_id, files[asset_id], link_dir)
            link_asset_dir(files[asset_id].parent, link_dir, asset_id)
            ev = self._send(controller, dict(action="CreateRuntimeAsset", asset=asset))
            if not ev.metadata["lastActionSuccess"]:
                raise ThorAssetError(f"AI2-THOR: CreateRuntimeAsset failed for Objaverse asset {asset_id!r} "
                                     f"({files[asset_id]}): {ev.metadata.get('errorMessage')}")
            self.created.append(asset_id)
        return missing


def asset_hook_controller_class(loader: ThorAssetLoader):
    """ai2thor 5.0.0's Controller with the pinned ai2thor's action hook for `loader`: before `Initialize` and
    `CreateHouse` are sent (also those `Controller.__init__` and `Controller.reset` send), `loader.before` runs."""
    from ai2thor.controller import Controller

    class AssetHookController(Controller):
        def step(self, action=None, **action_args):
            name = action.get("action") if isinstance(action, dict) else action
            if name in HOOKED_ACTIONS:
                msg = dict(action) if isinstance(action, dict) else {"action": action}
                msg.update(action_args)
                loader.before(name, msg, self)
            return super().step(action, **action_args)

    return AssetHookController
