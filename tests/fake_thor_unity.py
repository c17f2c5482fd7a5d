"""A stand-in for the AI2-THOR Unity executable: the Unity side of ai2thor 5.0.0's FIFO protocol, nothing more.

The real `ai2thor.controller.Controller(local_executable_path=<wrapper of this file>)` starts it as it would start
Unity (command-line screen arguments, `AI2THOR_FIFO_SERVER_PIPE_PATH` / `AI2THOR_FIFO_CLIENT_PIPE_PATH`). The
framing follows `ai2thor/fifo_server.py`: every field is a `"!BI"` header (field type, length) and a body, a
message ends with END_OF_MESSAGE (255). Actions arrive as one ACTION field holding JSON; each answer is a
METADATA field (msgpack: {"agents": [...], "sequenceId", "activeAgentId", "thirdPartyCameras"}), the navigation
frame (RGB_IMAGE) and the manipulation frame (THIRD_PARTY_IMAGE), both RGBA bottom row first as Unity
sends them.

The world is a scripted kinematic toy (no physics, no rendering): a Stretch-shaped agent on a plane, an arm
with lift/extension/wrist yaw, objects at fixed positions. Frames are synthetic patterns that encode the
sequence id, so a test can check exactly what was decoded. Every received action is appended to `--log` as one
JSON line. `--scenario` (JSON) sets the objects, a collision bound and a crash point ("die_after": exit without
answering the N-th agent action; "exit_code").

Assets: with "build_assets" (a list of asset ids) the build holds those and, like a real build, fails `CreateHouse`
when an object (or a child) uses an asset it holds neither there nor among the runtime assets created with
`CreateRuntimeAsset`; without it every asset counts as held. Runtime assets persist across `Reset` and form an LRU
cache: `AssetsInDatabase(assetIds, updateProceduralLRUCache)` answers {id: held} and, with the flag, marks the held
runtime ones as recently used; `DeleteLRUFromProceduralCache(assetLimit=N)` keeps the N most recently used.
`CreateRuntimeAsset(asset)` fails when the asset has no name or its albedo/normal texture is not a file at the
path given (the real build loads textures from there), or when its name is in "refuse_assets". These are the
Python side's expectations (ai2thor/hooks/procedural_asset_hook.py); the Unity code was not read.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
from collections import OrderedDict

import msgpack
import numpy as np

HEADER = struct.Struct("!BI")
METADATA, ACTION, RGB_IMAGE, THIRD_PARTY_IMAGE, END_OF_MESSAGE = 1, 2, 4, 10, 255
LIFT_OFFSET = 0.16297650337219238  # lift joint height at lift 0 (JiahengHu/FLaRe environment/stretch_controller.py)
# actions that move the agent or its arm (what "die_after" counts)
AGENT_ACTIONS = {"MoveAheadQuick", "MoveBackQuick", "RotateRightQuick", "MoveArm", "RotateWristRelative",
                 "PickupObject", "ReleaseObject"}


def nav_pattern(h: int, w: int, seq: int) -> np.ndarray:
    r, c = np.mgrid[0:h, 0:w]
    return np.stack([c % 256, r % 256, np.full_like(r, seq % 256)], -1).astype(np.uint8)


def manip_pattern(h: int, w: int, seq: int) -> np.ndarray:
    r, c = np.mgrid[0:h, 0:w]
    return np.stack([255 - c % 256, (2 * r) % 256, np.full_like(r, (seq * 7) % 256)], -1).astype(np.uint8)


class World:
    def __init__(self, scenario: dict, width: int, height: int):
        self.s = scenario
        self.width, self.height = width, height
        self.scene = "Procedural"
        self.pos = {"x": 0.0, "y": 0.9, "z": 0.0}
        self.yaw = 0.0
        self.lift, self.ext, self.wrist = 0.3, 0.0, 0.0
        self.held: list[str] = []
        self.nav_fov, self.manip_fov = 90.0, 90.0
        self.objects = scenario.get("objects", [])
        self.agent_actions = 0
        held = scenario.get("build_assets")
        self.build_assets = None if held is None else set(held)
        self.runtime_assets: OrderedDict[str, dict] = OrderedDict()  # LRU order: least recently used first

    def holds(self, asset_id: str) -> bool:
        return self.build_assets is None or asset_id in self.build_assets or asset_id in self.runtime_assets

    # ------------------------------------------------------------------ metadata
    def arm(self) -> dict:
        joints = [{"name": "stretch_robot_lift_jnt", "rootRelativePosition": {"x": 0.0, "y": self.lift + LIFT_OFFSET,
                                                                             "z": 0.0}, "position": dict(self.pos)}]
        joints += [{"name": f"stretch_robot_arm_{i}_jnt", "rootRelativePosition": {"x": 0.0, "y": self.lift, "z": 0.0},
                    "position": dict(self.pos)} for i in range(1, 6)]
        joints.append({"name": "stretch_robot_wrist_1_jnt", "rootRelativePosition": {"x": 0.0, "y": self.lift,
                                                                                     "z": self.ext},
                       "position": dict(self.pos)})
        joints.append({"name": "stretch_robot_wrist_2_jnt", "rootRelativePosition": {"x": 0.0, "y": self.lift,
                                                                                     "z": self.ext},
                       "rootRelativeRotation": {"x": 0.0, "y": 1.0, "z": 0.0, "w": self.wrist},
                       "position": dict(self.pos)})
        return {"joints": joints, "heldObjects": list(self.held), "pickupableObjects": self.near(1.0),
                "handSphereCenter": dict(self.pos)}

    def agent_meta(self, action: str, ok: bool, error: str, code: str, ret) -> dict:
        cams = [{"thirdPartyCameraId": 0, "fieldOfView": self.manip_fov}]
        return {"screenWidth": self.width, "screenHeight": self.height, "sceneName": self.scene,
                "lastAction": action, "lastActionSuccess": ok, "errorMessage": error, "errorCode": code,
                "actionReturn": ret, "thirdPartyCameras": cams, "fov": self.nav_fov,
                "agent": {"position": dict(self.pos), "rotation": {"x": 0.0, "y": self.yaw, "z": 0.0},
                          "cameraHorizon": 0.0, "isStanding": True},
                "arm": self.arm(),
                "objects": [{"objectId": o["objectId"], "objectType": o.get("objectType", "Thing"),
                             "position": o["position"], "visible": False} for o in self.objects]}

    def near(self, dist: float) -> list[str]:
        return [o["objectId"] for o in self.objects if math.dist((o["position"]["x"], o["position"]["z"]),
                                                               (self.pos["x"], self.pos["z"])) <= dist]

    def visible(self, max_distance: float) -> list[str]:
        """Objects within max_distance and within 45 degrees of the heading (yaw 0 looks along +z)."""
        out = []
        for o in self.objects:
            dx, dz = o["position"]["x"] - self.pos["x"], o["position"]["z"] - self.pos["z"]
            bearing = math.degrees(math.atan2(dx, dz)) - self.yaw
            bearing = (bearing + 180) % 360 - 180
            if math.hypot(dx, dz) <= max_distance and abs(bearing) <= 45:
                out.append(o["objectId"])
        return out

    # ------------------------------------------------------------------ actions
    def apply(self, a: dict):
        """-> (ok, errorMessage, errorCode, actionReturn)"""
        name = a.get("action")
        bound = float(self.s.get("collide_beyond", 1e9))
        if name == "Initialize":
            self.nav_fov = float(a.get("fieldOfView", self.nav_fov))
            return True, "", "", {"cameraNearPlane": a.get("cameraNearPlane", 0.1), "cameraFarPlane": 20.0}
        if name == "GetScenesInBuild":
            return True, "", "", ["Procedural"]
        if name == "Reset":
            self.scene = a.get("sceneName", "Procedural")
            self.held, self.lift, self.ext, self.wrist = [], 0.3, 0.0, 0.0
            return True, "", "", None
        if name == "ChangeResolution":
            self.width, self.height = int(a["x"]), int(a["y"])
            return True, "", "", None
        if name == "AssetsInDatabase":
            ids = list(a.get("assetIds") or [])
            if a.get("updateProceduralLRUCache"):
                for i in ids:
                    if i in self.runtime_assets:
                        self.runtime_assets.move_to_end(i)
            return True, "", "", {i: self.holds(i) for i in ids}
        if name == "DeleteLRUFromProceduralCache":
            keep = max(int(a["assetLimit"]), 0)
            while len(self.runtime_assets) > keep:
                self.runtime_assets.popitem(last=False)
            return True, "", "", None
        if name == "CreateRuntimeAsset":
            asset = a.get("asset")
            if not isinstance(asset, dict) or not asset.get("name"):
                return False, "CreateRuntimeAsset: asset without a name", "", None
            for key in ("albedoTexturePath", "normalTexturePath"):
                if not os.path.isfile(str(asset.get(key))):
                    return False, f"CreateRuntimeAsset {asset['name']}: no texture file {asset.get(key)}", "", None
            if asset["name"] in self.s.get("refuse_assets", []):
                return False, f"CreateRuntimeAsset {asset['name']}: refused by the scenario", "", None
            self.runtime_assets[asset["name"]] = asset
            self.runtime_assets.move_to_end(asset["name"])
            return True, "", "", {"assetId": asset["name"]}
        if name == "CreateHouse":
            house = a.get("house") or {}
            stack, lacking = list(house.get("objects") or []), []
            while stack:
                obj = stack.pop()
                if obj.get("assetId") and not self.holds(obj["assetId"]):
                    lacking.append(obj["assetId"])
                stack.extend(obj.get("children") or [])
            if lacking:
                return False, f"CreateHouse: asset {sorted(lacking)[0]!r} is not in the asset database", "", None
            agent = (house.get("metadata") or {}).get("agent") or {}
            if "position" in agent:
                self.pos = dict(agent["position"])
            return True, "", "", None
        if name == "Teleport":
            self.pos = {k: float(v) for k, v in a["position"].items()}
            self.yaw = float(a["rotation"]["y"]) % 360
            return True, "", "", None
        if name in ("MoveAheadQuick", "MoveBackQuick"):
            d = float(a["moveMagnitude"]) * (1 if name == "MoveAheadQuick" else -1)
            nx = self.pos["x"] + d * math.sin(math.radians(self.yaw))
            nz = self.pos["z"] + d * math.cos(math.radians(self.yaw))
            if abs(nx) > bound or abs(nz) > bound:
                return False, "Agent collided with Wall|0", "", None
            self.pos["x"], self.pos["z"] = round(nx, 6), round(nz, 6)
            return True, "", "", None
        if name == "RotateRightQuick":
            self.yaw = (self.yaw + float(a["degrees"])) % 360
            return True, "", "", None
        if name == "MoveArm":
            y, z = float(a["position"]["y"]), float(a["position"]["z"])
            self.lift, self.ext = min(max(y, 0.0), 1.05), min(max(z, 0.0), 0.52)
            return True, "", "", None
        if name == "RotateWristRelative":
            self.wrist = self.wrist + float(a["yaw"])
            return True, "", "", None
        if name == "PickupObject":
            near = [i for i in self.near(1.0) if i not in self.held]
            if not near:
                return False, "No objects in the hand sphere", "", None
            self.held.append(near[0])
            return True, "", "", None
        if name == "ReleaseObject":
            self.held = []
            return True, "", "", None
        if name == "GetVisibleObjects":
            return True, "", "", self.visible(float(a.get("maxDistance", 1e9)))
        if name == "UpdateThirdPartyCamera":
            self.manip_fov = float(a.get("fieldOfView", self.manip_fov))
            return True, "", "", None
        if name == "ChangeFOV":
            if a.get("camera") == "SecondaryCamera":
                self.manip_fov = float(a["fieldOfView"])
            else:
                self.nav_fov = float(a["fieldOfView"])
            return True, "", "", None
        if name in ("RotateCameraMount", "SetGripperOpenness", "ToggleMagnetVisibility", "SetObjectFilter",
                    "ResetMaterials", "RandomizeMaterials", "AdvancePhysicsStep", "Pass", "ChangeQuality"):
            return True, "", "", None
        return False, f"Invalid action: {name}", "InvalidAction", None


def read_exact(fd: int, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        part = os.read(fd, n - len(buf))
        if not part:
            sys.exit(0)  # the controller closed its end: stop like Unity does
        buf += part
    return buf


def read_message(fd: int) -> dict:
    action = None
    while True:
        kind, length = HEADER.unpack(read_exact(fd, HEADER.size))
        if kind == END_OF_MESSAGE:
            return action
        body = read_exact(fd, length)
        if kind == ACTION:
            action = json.loads(body)


def write_message(out, world: World, action: str, seq: int, ok=True, error="", code="", ret=None):
    meta = world.agent_meta(action, ok, error, code, ret)
    msg = {"agents": [meta], "sequenceId": seq, "activeAgentId": 0,
           "thirdPartyCameras": meta["thirdPartyCameras"]}
    h, w = world.height, world.width
    alpha = np.full((h, w, 1), 255, np.uint8)
    fields = [(METADATA, msgpack.dumps(msg)),
              # Unity sends RGBA rows bottom first (ai2thor's read_buffer_image flips them back)
              (RGB_IMAGE, np.flipud(np.concatenate([nav_pattern(h, w, seq), alpha], -1)).tobytes()),
              (THIRD_PARTY_IMAGE, np.flipud(np.concatenate([manip_pattern(h, w, seq), alpha], -1)).tobytes())]
    for kind, body in fields:
        out.write(HEADER.pack(kind, len(body)) + body)
    out.write(HEADER.pack(END_OF_MESSAGE, 0))
    out.flush()


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--scenario", default="")
    p.add_argument("--log", default="")
    a, unity_args = p.parse_known_args(argv)  # the rest: Unity's -screen-width/-screen-height/... arguments
    scenario = json.loads(open(a.scenario).read()) if a.scenario else {}
    size = {unity_args[i]: unity_args[i + 1] for i in range(len(unity_args) - 1) if unity_args[i].startswith("-")}
    world = World(scenario, int(size.get("-screen-width", 300)), int(size.get("-screen-height", 300)))
    log = open(a.log, "a") if a.log else None
    server_path = os.environ["AI2THOR_FIFO_SERVER_PIPE_PATH"]  # we write, the controller reads
    client_path = os.environ["AI2THOR_FIFO_CLIENT_PIPE_PATH"]  # the controller writes, we read
    out = open(server_path, "wb")
    write_message(out, world, "", 0)  # the first message the controller waits for (sequence id 0)
    fd = os.open(client_path, os.O_RDONLY)
    die_after = scenario.get("die_after")
    while True:
        action = read_message(fd)
        if log:
            log.write(json.dumps(action, sort_keys=True) + "\n")
            log.flush()
        name = action.get("action")
        if name in AGENT_ACTIONS:
            world.agent_actions += 1
            if die_after is not None and world.agent_actions >= int(die_after):
                os._exit(int(scenario.get("exit_code", 1)))  # a crash: the action is never answered
        ok, error, code, ret = world.apply(action)
        write_message(out, world, name, int(action.get("sequenceId", 0)), ok, error, code, ret)


if __name__ == "__main__":
    sys.exit(main())
