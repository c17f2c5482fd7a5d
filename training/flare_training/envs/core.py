"""The mini-CHORES Gymnasium environment: task specs, `make_env`, seed splits and SEL (see `envs/__init__.py`)."""
from __future__ import annotations

import string
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from flare_policy.embodiments import SIM_ACTIONS, get_embodiment

from . import levels as L
from .render import PovRenderer

SUCCESS_REWARD = 10.0   # FLaRe goal_success_reward; every other reward term is 0 unless dense_reward=True
SHAPING_DIST = 0.1      # dense: per cell of progress towards the goal cells
SHAPING_PICK = 1.0      # dense (pickup/fetch): picking up a target (+), dropping it again (-)
SHAPING_MARK = 1.0      # dense (roomvisit): a `sub_done` that marks a new room
SHAPING_BAD_MARK = -0.1  # dense (roomvisit): a `sub_done` that marks nothing


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    max_steps: int
    heldout: bool
    level_cls: type
    level_kwargs: dict = field(default_factory=dict)
    nav_only: bool = True  # can run on the navigation-only `sim_locobot` embodiment

    def make_level(self, embodiment: str = "sim") -> L.ChoresLevel:
        kw = dict(self.level_kwargs)
        if embodiment == "sim_locobot":
            kw.update(agent_view_size=LOCOBOT_VIEW, doors_open=True)
        return self.level_cls(max_steps=self.max_steps, **kw)


HOUSE = dict(room_size=5, num_rows=3, num_cols=3)  # 3x3 rooms with 3x3 interiors (13x13 grid)
ONE_ROOM = dict(room_size=7, num_rows=1, num_cols=1)  # one room with a 5x5 interior
LOCOBOT_VIEW = 5  # sim_locobot camera: 5x5 cells instead of 7x7

TASKS: dict[str, TaskSpec] = {
    "objectnav": TaskSpec(
        "objectnav", "find a <color> <object> in a 3x3-room house with closed doors; `end` facing it",
        150, False, L.ObjectNavLevel, dict(HOUSE, num_objs=8)),
    "pickup": TaskSpec(
        "pickup", "pick up a <color> <object> placed near the start in one room; holding it at `end`",
        64, False, L.PickupLevel, dict(ONE_ROOM, num_objs=5), nav_only=False),
    "fetch": TaskSpec(
        "fetch", "find a <color> <object> in the 3x3-room house and pick it up; holding it at `end`",
        150, False, L.FetchLevel, dict(HOUSE, num_objs=8), nav_only=False),
    "roomvisit": TaskSpec(
        "roomvisit", "visit all rooms of a 2x2..3x3 house, `sub_done` in each new room, then `end`",
        250, False, L.RoomVisitLevel,
        dict(room_size=5, num_rows=3, num_cols=3, num_objs=4, layouts=((2, 2), (2, 3), (3, 2), (3, 3))),
        nav_only=False),
    "objectnav_localref": TaskSpec(
        "objectnav_localref", "held-out: the <object> in front of you / behind you / on your left/right "
        "(relative to the start pose), one room; `end` facing it",
        64, True, L.LocalRefLevel, dict(ONE_ROOM, num_objs=6)),
    "objectnav_affordance": TaskSpec(
        "objectnav_affordance", "held-out: find an object named by its use (key/box/ball) in the house; "
        "`end` facing one", 150, True, L.AffordanceLevel, dict(HOUSE, num_objs=8)),
    "roomnav": TaskSpec(
        "roomnav", "held-out: go to the room with a unique landmark object; `end` inside that room",
        150, True, L.RoomNavLevel, dict(HOUSE, num_objs=8)),
}
DEMO_TASKS = ("objectnav", "pickup", "fetch", "roomvisit")
HELDOUT_TASKS = ("objectnav_localref", "objectnav_affordance", "roomnav")
EMBODIMENTS = ("sim", "sim_locobot")

SPLITS = {"train": (0, 1_000_000_000), "val": (1_000_000_000, 1_500_000_000),
          "test": (1_500_000_000, 2_000_000_000)}

GOAL_CHARSET = string.ascii_letters + string.digits + " .,;:'-?!/()"


def split_seeds(split: str, n: int, offset: int = 0) -> list[int]:
    """`n` consecutive seeds of `split`, starting `offset` seeds into it. The split ranges are disjoint:
    train = [0, 1e9), val = [1e9, 1.5e9), test = [1.5e9, 2e9)."""
    try:
        lo, hi = SPLITS[split]
    except KeyError:
        raise ValueError(f"unknown split {split!r}; known: {sorted(SPLITS)}") from None
    if n < 0 or offset < 0:
        raise ValueError("n and offset must be >= 0")
    if lo + offset + n > hi:
        raise ValueError(f"split {split!r} has only {hi - lo} seeds; asked for [{offset}, {offset + n})")
    return list(range(lo + offset, lo + offset + n))


def seed_split(seed: int) -> str:
    """The split a seed belongs to."""
    for name, (lo, hi) in SPLITS.items():
        if lo <= seed < hi:
            return name
    raise ValueError(f"seed {seed} is outside every split")


def sel(success, length, expert_length) -> float | None:
    """Success weighted by Episode Length (FLaRe `utils/sel_utils.py`): 0 on failure, else L_exp / max(L, L_exp).
    Edge cases: L_exp == 0 gives 1 if L == 0 else 0; L_exp < 0 (no expert length) gives None."""
    if expert_length is None or expert_length < 0:
        return None
    if not success:
        return 0.0
    if expert_length == 0:
        return 1.0 if length == 0 else 0.0
    return float(expert_length) / float(max(length, expert_length))


def make_env(task: str, *, dense_reward: bool = False, embodiment: str = "sim", render_tile: int = 8,
             with_expert_length: bool = False, render: bool = True) -> "MiniChoresEnv":
    """Create a mini-CHORES environment (see the package docstring for the observation/action contract).

    with_expert_length: also run the expert at every reset (on a second env) and report `info["expert_length"]`
        (costs one expert episode per reset: ~5-40 ms). Otherwise use `flare_training.expert.expert_length`.
    render: False skips rendering (the "rgb" observation is all zeros); used by the expert-length helper.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
    if embodiment not in EMBODIMENTS:
        raise ValueError(f"unknown sim embodiment {embodiment!r}; known: {EMBODIMENTS}")
    spec = TASKS[task]
    if embodiment == "sim_locobot" and not spec.nav_only:
        raise ValueError(f"task {task!r} needs manipulation/sub_done actions, which sim_locobot masks")
    return MiniChoresEnv(spec, dense_reward=dense_reward, embodiment=embodiment, render_tile=render_tile,
                         with_expert_length=with_expert_length, render=render)


class MiniChoresEnv(gym.Wrapper):
    """One mini-CHORES task on one sim embodiment. `env.unwrapped` is the MiniGrid level (`levels.ChoresLevel`)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, spec: TaskSpec, *, dense_reward=False, embodiment="sim", render_tile=8,
                 with_expert_length=False, render=True):
        level = spec.make_level(embodiment)
        super().__init__(level)
        self.spec_ = spec
        self.task = spec.name
        self.embodiment = get_embodiment(embodiment)
        self.embodiment_name = embodiment
        mask = self.embodiment.action_mask()
        self.allowed = None if all(mask) else frozenset(i for i, ok in enumerate(mask) if ok)
        # sim_locobot pans its camera with two reinterpreted actions (a quarter turn each, within +-90 deg of
        # the base heading); the level sees them as no-ops.
        reint = self.embodiment.reinterpreted
        self.camera_pan = {SIM_ACTIONS.index(a): (-1 if m == "look_left" else 1) for a, m in reint.items()}
        self._level_allowed = self.allowed if not self.camera_pan else self.allowed - set(self.camera_pan)
        self.pan = 0
        self.dense_reward = dense_reward
        self.render_tile = int(render_tile)
        self.with_expert_length = with_expert_length
        self._render = render
        self.max_steps = spec.max_steps
        side = 7 * self.render_tile
        self.observation_space = spaces.Dict({
            "rgb": spaces.Box(0, 255, (side, side, 3), np.uint8),
            "in_hand": spaces.Discrete(2),
            "goal": spaces.Text(max_length=512, min_length=0, charset=GOAL_CHARSET),
            "step": spaces.Discrete(spec.max_steps + 1),
        })
        self.action_space = spaces.Discrete(len(SIM_ACTIONS))
        # sim_locobot: the 5x5 view is rendered at the same tile size, then resized (nearest) to 7x7 tiles,
        # i.e. a narrower field of view at the same image resolution.
        view = level.agent_view_size
        self._resize = None if view == 7 else (np.arange(side) * (view * self.render_tile)) // side
        self._blank = np.zeros((side, side, 3), np.uint8)
        self._renderer = PovRenderer(self.render_tile)
        self._done = True
        self.last_seed = None

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        level = self.env.unwrapped
        level.reset(seed=seed, options=options)
        self.last_seed = seed
        self._done = False
        self.pan = 0
        info = self._info(success=False)
        if self.with_expert_length:
            if seed is None:
                info["expert_length"] = -1
            else:
                from flare_training.expert import expert_length
                info["expert_length"] = expert_length(self.task, seed, embodiment=self.embodiment_name)
        self._dist = self._goal_distance() if self.dense_reward else None
        return self._obs(), info

    def step(self, action):
        if self._done:
            raise RuntimeError("step() called on a finished episode; call reset()")
        level = self.env.unwrapped
        a = int(action)
        if not 0 <= a < len(SIM_ACTIONS):
            raise ValueError(f"invalid action {action!r}; expected 0..{len(SIM_ACTIONS) - 1}")
        if a in self.camera_pan:
            self.pan = max(-1, min(1, self.pan + self.camera_pan[a]))
        ev = level.apply(a, self._level_allowed)
        terminated = bool(ev.get("end", False))
        success = terminated and level.judge()
        truncated = (not terminated) and level.step_count >= self.max_steps
        reward = SUCCESS_REWARD if success else 0.0
        if self.dense_reward:
            reward += self._shaping(ev)
        self._done = terminated or truncated
        return self._obs(), reward, terminated, truncated, self._info(success)

    def render(self):
        """Full top-down view of the house (for videos)."""
        return self.env.unwrapped.get_frame(highlight=True, tile_size=self.render_tile, agent_pov=False)

    # ------------------------------------------------------------------ helpers
    @property
    def goal(self) -> str:
        return self.env.unwrapped.goal

    def _obs(self) -> dict[str, Any]:
        level = self.env.unwrapped
        if self._render:
            # == level.get_pov_render(tile) looking along the camera heading, ~5x faster
            rgb = self._renderer.render(level, direction=(level.agent_dir + self.pan) % 4)
            if self._resize is not None:
                rgb = rgb[self._resize][:, self._resize]
        else:
            rgb = self._blank
        return {"rgb": rgb, "in_hand": int(level.carrying is not None), "goal": level.goal,
                "step": int(level.step_count)}

    def _info(self, success: bool) -> dict[str, Any]:
        level = self.env.unwrapped
        info = {"success": bool(success), "task": self.task}
        if isinstance(level, L.RoomVisitLevel):
            total = level.num_rooms
            info.update(rooms_total=total, rooms_marked=len(level.marked_rooms),
                        pct_rooms=len(level.visited_rooms) / total)
        return info

    def _goal_distance(self) -> float:
        level = self.env.unwrapped
        if self.task in ("pickup", "fetch") and level.holds_target():
            return 0.0
        goals = level.goal_cells()
        if not goals:
            return 0.0
        dist = bfs_distances(level, goals)
        d = dist[int(level.agent_pos[0]), int(level.agent_pos[1])]
        return float(d) if d >= 0 else float(level.width * level.height)

    def _shaping(self, ev) -> float:
        """Dense shaping (dense_reward=True only): SHAPING_DIST per cell of BFS progress towards the goal cells,
        plus event terms (pick/drop a target; mark a new room / a useless sub_done). Steps that change the goal
        set (pick, drop, mark) never move the agent, so they get no progress term and there are no jumps."""
        level = self.env.unwrapped
        r = 0.0
        now = self._goal_distance()
        if not ("marked" in ev or "picked" in ev or "dropped" in ev):
            r += SHAPING_DIST * (self._dist - now)
        self._dist = now
        if self.task in ("pickup", "fetch"):
            if any(ev.get("picked") is t for t in level.targets):
                r += SHAPING_PICK
            if any(ev.get("dropped") is t for t in level.targets):
                r -= SHAPING_PICK
        if self.task == "roomvisit" and "marked" in ev:
            r += SHAPING_MARK if ev["marked"] else SHAPING_BAD_MARK
        return r


def bfs_distances(level, goals) -> np.ndarray:
    """(width, height) int array: steps (cells) from each cell to the nearest goal cell through passable cells
    (empty or door); -1 where unreachable."""
    w, h = level.width, level.height
    passable = level.passable_mask()
    dist = np.full((w, h), -1, dtype=np.int32)
    queue = deque()
    for g in goals:
        gx, gy = int(g[0]), int(g[1])
        if passable[gx, gy] and dist[gx, gy] < 0:
            dist[gx, gy] = 0
            queue.append((gx, gy))
    ax, ay = int(level.agent_pos[0]), int(level.agent_pos[1])
    passable[ax, ay] = True
    while queue:
        x, y = queue.popleft()
        d = dist[x, y] + 1
        for nx, ny in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
            if 0 <= nx < w and 0 <= ny < h and passable[nx, ny] and dist[nx, ny] < 0:
                dist[nx, ny] = d
                queue.append((nx, ny))
    return dist
