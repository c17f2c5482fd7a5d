"""MiniGrid level generators for the mini-CHORES task families.

Each family is a `RoomGrid` subclass that generates a layout, a natural-language goal and the privileged task
state used to judge success (target objects, target room, rooms marked ...). The levels do not use BabyAI's
verifier: success is judged only when the agent issues `end` (see `ChoresLevel.judge`). Where the BabyAI bot is
the expert, the level also builds a BabyAI instruction (`self.instrs`) for it; the instruction never ends an
episode.

All randomness comes from `self.np_random`, so `reset(seed=s)` is deterministic (layout, goal text and start
pose). Layouts are rejection-sampled until every free cell is reachable from the start without moving any object
(doors count as passable), so no task ever needs "unblocking".
"""
from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np
from minigrid.core.constants import COLOR_NAMES
from minigrid.core.roomgrid import RoomGrid
from minigrid.envs.babyai.core.roomgrid_level import BabyAIMissionSpace, RejectSampling
from minigrid.envs.babyai.core.verifier import GoToInstr, ObjDesc, PickupInstr

from flare_policy.embodiments import SIM_ACTIONS

OBJ_TYPES = ("key", "ball", "box")

# SPOC-style verb templates (utils/constants/template_verbs.py), adapted to BabyAI objects.
NAV_VERBS = ("go to", "locate", "find", "search for", "navigate to")
PICKUP_VERBS = ("pick up", "take", "grab", "grasp", "clutch", "hold")
ROOMVISIT_TEMPLATES = (
    "visit all {n} rooms in the house. indicate when you have seen a new room and when you are done",
    "go to all {n} rooms in the house. indicate when you have seen a new room and when you are done",
    "explore all {n} rooms of the house. indicate when you have seen a new room and when you are done",
)
ROOMNAV_TEMPLATES = (
    "{verb} the room with {obj}",
    "{verb} the room containing {obj}",
    "{verb} the room where {obj} is",
)
# Held-out affordance family: the target type is named by what it is used for.
AFFORDANCES = {
    "key": ("something that opens doors", "something to unlock a door with", "a thing that unlocks doors"),
    "box": ("a container", "something to put things in", "something that can hold other things"),
    "ball": ("something you can roll", "something you can throw", "a toy you can bounce"),
}
LOC_NAMES = ("front", "behind", "left", "right")

A_MOVE, A_LEFT, A_RIGHT, A_PICKUP, A_DROP, A_TOGGLE, A_END, A_SUB_DONE = range(len(SIM_ACTIONS))
assert SIM_ACTIONS[A_END] == "end" and SIM_ACTIONS[A_SUB_DONE] == "sub_done"


class ChoresLevel(RoomGrid):
    """Base class: layout bookkeeping, the action semantics of the sim embodiment and success judging."""

    family = ""
    expert_kind = "bot"  # "bot" (BabyAIBot with `self.instrs`) or "planner" (full-map BFS planner)

    def __init__(self, *, room_size: int, num_rows: int, num_cols: int, max_steps: int,
                 agent_view_size: int = 7, doors_open: bool = False, num_objs: int = 0,
                 layouts: tuple[tuple[int, int], ...] | None = None):
        self.doors_open = doors_open
        self.num_objs = num_objs
        self.layouts = tuple(layouts) if layouts else None
        if self.layouts:
            num_rows, num_cols = max(r for r, _ in self.layouts), max(c for _, c in self.layouts)
        super().__init__(room_size=room_size, num_rows=num_rows, num_cols=num_cols, max_steps=max_steps,
                         agent_view_size=agent_view_size, mission_space=BabyAIMissionSpace())
        self._init_episode_state()

    # ------------------------------------------------------------------ generation
    def reset(self, *, seed=None, options=None):
        if self.layouts:
            # Seed first so that the layout choice itself is part of the seeded episode.
            gym.Env.reset(self, seed=seed)
            rows, cols = self.layouts[int(self.np_random.integers(0, len(self.layouts)))]
            self._set_layout(rows, cols)
            seed = None  # already seeded; MiniGridEnv.reset must not reseed
        obs, info = super().reset(seed=seed, options=options)
        if self.instrs is not None:
            self.instrs.reset_verifier(self)
        self.visited_rooms.add(self.room_of(self.agent_pos))
        self.visited_rooms.discard(None)
        return obs, info

    def _set_layout(self, rows: int, cols: int):
        self.num_rows, self.num_cols = rows, cols
        self.height = (self.room_size - 1) * rows + 1
        self.width = (self.room_size - 1) * cols + 1

    def _init_episode_state(self):
        self.goal = ""
        self.instrs = None
        self.targets: list = []          # target objects (identity), for object families
        self.target_desc: ObjDesc | None = None
        self.target_room: int | None = None
        self.marked_rooms: set[int] = set()
        self.visited_rooms: set[int] = set()
        self.start_pose = None

    def _gen_grid(self, width, height):
        for _ in range(10000):
            try:
                super()._gen_grid(width, height)
                self._init_episode_state()
                self.gen_mission()
                self.start_pose = (tuple(int(v) for v in self.agent_pos), int(self.agent_dir))
                break
            except (RejectSampling, RecursionError):
                continue
        else:  # pragma: no cover - never observed
            raise RuntimeError(f"{type(self).__name__}: could not generate a level")
        self.mission = self.goal

    def gen_mission(self):
        raise NotImplementedError

    # -- helpers used by gen_mission
    def _house(self, num_objs: int):
        """Agent in a random room, all rooms connected by doors, `num_objs` random objects in random rooms."""
        self.place_agent()
        self.connect_all()
        objs = [self.add_object(self._rand_int(0, self.num_cols), self._rand_int(0, self.num_rows))[0]
                for _ in range(num_objs)]
        if self.doors_open:
            self.open_all_doors()
        self.check_reachable()
        return objs

    def place_in_room(self, i, j, obj):
        """Like RoomGrid.place_in_room (a random free interior cell, not next to the agent), but also never in
        a doorway's entrance cell (an object there would cut a room off), drawing among the allowed cells in one
        go instead of by rejection."""
        room = self.get_room(i, j)
        (tx, ty), (sx, sy) = room.top, room.size
        ax, ay = int(self.agent_pos[0]), int(self.agent_pos[1])
        W = self.grid.width
        g = self.grid.grid
        cands = []
        for y in range(ty + 1, ty + sy - 1):
            for x in range(tx + 1, tx + sx - 1):
                if g[y * W + x] is not None or abs(x - ax) + abs(y - ay) < 2:
                    continue
                if any(c is not None and c.type == "door"
                       for c in (g[y * W + x + 1], g[y * W + x - 1], g[(y + 1) * W + x], g[(y - 1) * W + x])):
                    continue
                cands.append((x, y))
        if not cands:
            raise RejectSampling("no free cell for an object")
        x, y = cands[self._rand_int(0, len(cands))]
        self.put_obj(obj, x, y)
        room.objs.append(obj)
        return obj, (x, y)

    def connect_all(self, door_colors=COLOR_NAMES, max_itrs: int = 5000):
        """RoomGrid.connect_all (random doors until every room is reachable from the agent's room, which also
        adds some redundant doors), with batched random draws and reachability updated only when a door is
        added: the same process, ~5x faster."""
        start = self.room_from_pos(*self.agent_pos)
        total = self.num_rows * self.num_cols

        def reach_size():
            seen, stack = set(), [start]
            while stack:
                room = stack.pop()
                if id(room) in seen:
                    continue
                seen.add(id(room))
                stack += [room.neighbors[k] for k in range(4) if room.doors[k]]
            return len(seen)

        added = []
        n = reach_size()
        itrs = 0
        while n < total:
            draws = self.np_random.integers(0, [self.num_cols, self.num_rows, 4], size=(64, 3))
            for i, j, k in draws:
                itrs += 1
                if itrs > max_itrs:
                    raise RecursionError("connect_all failed")
                room = self.get_room(int(i), int(j))
                if not room.door_pos[k] or room.doors[k]:
                    continue
                if room.locked or room.neighbors[k].locked:
                    continue
                door, _ = self.add_door(int(i), int(j), int(k), self._rand_elem(door_colors), False)
                added.append(door)
                n = reach_size()
                if n == total:
                    break
        return added

    def open_all_doors(self):
        for row in self.room_grid:
            for room in row:
                for door in room.doors:
                    if door and door is not True:
                        door.is_open = True

    def check_reachable(self):
        """Reject layouts where a free cell or an object cannot be reached without moving an object."""
        passable = self.passable_mask()
        seen = np.zeros_like(passable)
        ax, ay = (int(v) for v in self.agent_pos)
        seen[ax, ay] = True
        queue = deque([(ax, ay)])
        while queue:
            x, y = queue.popleft()
            for nx, ny in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
                if passable[nx, ny] and not seen[nx, ny]:
                    seen[nx, ny] = True
                    queue.append((nx, ny))
        if np.any(passable & ~seen):
            raise RejectSampling("part of the house is cut off by objects")
        W = self.grid.width
        for k, cell in enumerate(self.grid.grid):
            if cell is not None and cell.type in OBJ_TYPES:
                y, x = divmod(k, W)
                if not any(seen[nx, ny] for nx, ny in adjacent_cells((x, y), self.width, self.height)):
                    raise RejectSampling("unreachable object")

    def passable_mask(self) -> np.ndarray:
        """(width, height) bool: cells the agent can stand on (empty or a door, doors being openable)."""
        flat = [c is None or c.type == "door" for c in self.grid.grid]  # row-major (y, x)
        return np.array(flat, dtype=bool).reshape(self.height, self.width).T.copy()

    def _rand_choice(self, seq):
        return seq[int(self.np_random.integers(0, len(seq)))]

    def _set_target(self, desc: ObjDesc, instr_cls=GoToInstr):
        desc.find_matching_objs(self)
        if not desc.obj_set:
            raise RejectSampling("no object matches the description")
        self.target_desc = desc
        self.targets = list(desc.obj_set)
        self.instrs = instr_cls(desc)

    # ------------------------------------------------------------------ rooms
    def room_of(self, pos) -> int | None:
        """Index (row-major) of the room whose interior contains `pos`; None on walls and doorways."""
        x, y = int(pos[0]), int(pos[1])
        s = self.room_size - 1
        if x % s == 0 or y % s == 0:
            return None
        return (y // s) * self.num_cols + (x // s)

    @property
    def num_rooms(self) -> int:
        return self.num_rows * self.num_cols

    def room_cells(self, room: int) -> list[tuple[int, int]]:
        j, i = divmod(room, self.num_cols)
        s = self.room_size - 1
        return [(x, y) for x in range(i * s + 1, (i + 1) * s) for y in range(j * s + 1, (j + 1) * s)]

    # ------------------------------------------------------------------ dynamics
    def apply(self, action: int, allowed: frozenset | None = None) -> dict:
        """Execute one sim action (index into SIM_ACTIONS). Returns events; never computes observations.

        `allowed` (action indices) makes every other action a no-op (embodiment masking)."""
        self.step_count += 1
        ev = {"noop": False}
        if allowed is not None and action not in allowed:
            ev["noop"] = True
        elif action == A_MOVE:
            fwd = self.front_pos
            cell = self.grid.get(*fwd)
            if cell is None or cell.can_overlap():
                self.agent_pos = tuple(int(v) for v in fwd)
                room = self.room_of(self.agent_pos)
                if room is not None:
                    self.visited_rooms.add(room)
        elif action == A_LEFT:
            self.agent_dir = (self.agent_dir - 1) % 4
        elif action == A_RIGHT:
            self.agent_dir = (self.agent_dir + 1) % 4
        elif action == A_PICKUP:
            fwd = self.front_pos
            cell = self.grid.get(*fwd)
            if cell is not None and cell.can_pickup() and self.carrying is None:
                self.carrying = cell
                cell.cur_pos = np.array([-1, -1])
                self.grid.set(fwd[0], fwd[1], None)
                ev["picked"] = cell
        elif action == A_DROP:
            fwd = self.front_pos
            if self.grid.get(*fwd) is None and self.carrying is not None:
                obj = self.carrying
                self.grid.set(fwd[0], fwd[1], obj)
                obj.cur_pos = fwd
                self.carrying = None
                ev["dropped"] = obj
                if self.instrs is not None:  # keep the bot's object tracking right (as RoomGridLevel.step)
                    self.instrs.update_objs_poss()
        elif action == A_TOGGLE:
            # Only doors toggle (open/close). Opening a BabyAI box would destroy it (it is replaced by its
            # contents), which has no CHORES counterpart, so boxes ignore `toggle`.
            fwd = self.front_pos
            cell = self.grid.get(*fwd)
            if cell is not None and cell.type == "door":
                cell.toggle(self, fwd)
                ev["toggled"] = cell
        elif action == A_SUB_DONE:
            ev["marked"] = self.sub_done()
        elif action == A_END:
            ev["end"] = True
        else:
            raise ValueError(f"invalid action index {action!r}; expected 0..{len(SIM_ACTIONS) - 1}")
        return ev

    def sub_done(self) -> bool:
        """`sub_done`: no motion; only RoomVisit gives it a meaning."""
        return False

    def judge(self) -> bool:
        """Success test, evaluated when the agent issues `end`."""
        raise NotImplementedError

    def front_is_target(self) -> bool:
        cell = self.grid.get(*self.front_pos)
        return cell is not None and any(cell is t for t in self.targets)

    def holds_target(self) -> bool:
        return self.carrying is not None and any(self.carrying is t for t in self.targets)

    # ------------------------------------------------------------------ dense shaping support
    def goal_cells(self) -> list[tuple[int, int]]:
        """Cells where the agent should stand (used for dense shaping and the planner)."""
        raise NotImplementedError


def adjacent_cells(pos, width, height):
    x, y = int(pos[0]), int(pos[1])
    return [(nx, ny) for nx, ny in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1))
            if 0 <= nx < width and 0 <= ny < height]


class _ObjectGoalLevel(ChoresLevel):
    """Families whose goal is to face (or hold) a target object."""

    def goal_cells(self):
        cells = []
        for t in self.targets:
            if t.cur_pos is None or t is self.carrying or self.grid.get(*t.cur_pos) is not t:
                continue
            cells += adjacent_cells(t.cur_pos, self.width, self.height)
        return cells


class ObjectNavLevel(_ObjectGoalLevel):
    """objectnav: "<go-to verb> a/the <color> <type>" in a multi-room house (BabyAI GoTo-style, doors closed).
    Success: `end` while a matching object is in the cell in front of the agent."""

    family = "objectnav"

    def gen_mission(self):
        objs = self._house(self.num_objs)
        obj = self._rand_choice(objs)
        self._set_target(ObjDesc(obj.type, obj.color))
        self.goal = f"{self._rand_choice(NAV_VERBS)} {self.target_desc.surface(self)}"

    def judge(self):
        return self.front_is_target()


class FetchLevel(_ObjectGoalLevel):
    """fetch: "<go-to verb> a/the <color> <type> and <pickup verb> that <type>" in the house (BabyAI Pickup-style).
    Success: a matching object is held at `end`."""

    family = "fetch"

    def gen_mission(self):
        objs = self._house(self.num_objs)
        obj = self._rand_choice(objs)
        self._set_target(ObjDesc(obj.type, obj.color), PickupInstr)
        self.goal = (f"{self._rand_choice(NAV_VERBS)} {self.target_desc.surface(self)} and "
                     f"{self._rand_choice(PICKUP_VERBS)} that {obj.type}")

    def judge(self):
        return self.holds_target()


class PickupLevel(_ObjectGoalLevel):
    """pickup: "<pickup verb> a/the <color> <type>", one room, target placed near the start and in view
    (CHORES PickUp starts next to the object). Success: a matching object is held at `end`."""

    family = "pickup"
    near = 3  # max Manhattan distance between the start cell and the target

    def gen_mission(self):
        self.place_agent(0, 0)
        # The target: a free cell in view, 2..near cells away (never directly adjacent: reject_next_to).
        ax, ay = (int(v) for v in self.agent_pos)
        cands = [(x, y) for x in range(1, self.width - 1) for y in range(1, self.height - 1)
                 if 2 <= abs(x - ax) + abs(y - ay) <= self.near and self.in_view(x, y)
                 and self.grid.get(x, y) is None]
        if not cands:
            raise RejectSampling("no cell near the agent in view")
        x, y = self._rand_choice(cands)
        kind, color = self._rand_choice(OBJ_TYPES), self._rand_choice(COLOR_NAMES)
        obj = _make_obj(kind, color)
        self.put_obj(obj, x, y)
        self.room_grid[0][0].objs.append(obj)
        for _ in range(self.num_objs - 1):
            self.add_object(0, 0)
        self.check_reachable()
        self._set_target(ObjDesc(obj.type, obj.color), PickupInstr)
        self.goal = f"{self._rand_choice(PICKUP_VERBS)} {self.target_desc.surface(self)}"

    def judge(self):
        return self.holds_target()


class RoomVisitLevel(ChoresLevel):
    """roomvisit: visit every room of a 2x2 .. 3x3 house and mark each newly entered room with `sub_done`.
    Success: every room marked at `end`. `sub_done` outside a room interior or in a marked room does nothing."""

    family = "roomvisit"
    expert_kind = "planner"

    def gen_mission(self):
        self._house(self.num_objs)
        self.goal = self._rand_choice(ROOMVISIT_TEMPLATES).format(n=self.num_rooms)

    def sub_done(self) -> bool:
        room = self.room_of(self.agent_pos)
        if room is None or room in self.marked_rooms:
            return False
        self.marked_rooms.add(room)
        return True

    def judge(self):
        return len(self.marked_rooms) == self.num_rooms

    def goal_cells(self):
        return [c for r in range(self.num_rooms) if r not in self.marked_rooms for c in self.room_cells(r)]


class LocalRefLevel(_ObjectGoalLevel):
    """Held-out objectnav_localref: "<go-to verb> a/the <color> <type> in front of you | behind you | on your
    left | on your right" (BabyAI GoToLoc semantics: judged relative to the start pose, objects of the start
    room only). Success: `end` facing one of the objects that matched at the start."""

    family = "objectnav_localref"

    def gen_mission(self):
        self.place_agent(0, 0)
        objs = [self.add_object(0, 0)[0] for _ in range(self.num_objs)]
        self.check_reachable()
        obj = self._rand_choice(objs)
        ax, ay = (int(v) for v in self.agent_pos)
        v = (obj.cur_pos[0] - ax, obj.cur_pos[1] - ay)
        d1 = self.dir_vec
        d2 = (-d1[1], d1[0])
        locs = [loc for loc, ok in (("front", v[0] * d1[0] + v[1] * d1[1] > 0),
                                    ("behind", v[0] * d1[0] + v[1] * d1[1] < 0),
                                    ("left", v[0] * d2[0] + v[1] * d2[1] < 0),
                                    ("right", v[0] * d2[0] + v[1] * d2[1] > 0)) if ok]
        desc = ObjDesc(obj.type, obj.color, self._rand_choice(locs))
        self._set_target(desc)
        self.goal = f"{self._rand_choice(NAV_VERBS)} {desc.surface(self)}"

    def judge(self):
        return self.front_is_target()


class AffordanceLevel(_ObjectGoalLevel):
    """Held-out objectnav_affordance: the target type is named by its use ("something that opens doors" = key,
    "a container" = box, "something you can roll" = ball). Success: `end` facing any object of that type."""

    family = "objectnav_affordance"

    def gen_mission(self):
        objs = self._house(self.num_objs)
        obj = self._rand_choice(objs)
        self._set_target(ObjDesc(obj.type))
        self.goal = f"{self._rand_choice(NAV_VERBS)} {self._rand_choice(AFFORDANCES[obj.type])}"

    def judge(self):
        return self.front_is_target()


class RoomNavLevel(ChoresLevel):
    """Held-out roomnav: "<go-to verb> the room with the <color> <type>" (a unique landmark object; CHORES
    RoomNav names a room type). The target room is never the start room. Success: `end` while standing inside
    the target room (doorways do not count)."""

    family = "roomnav"
    expert_kind = "planner"

    def gen_mission(self):
        objs = self._house(self.num_objs)
        start_room = self.room_of(self.agent_pos)
        uniq = [o for o in objs
                if sum(1 for p in objs if (p.type, p.color) == (o.type, o.color)) == 1
                and self.room_of(o.cur_pos) not in (None, start_room)]
        if not uniq:
            raise RejectSampling("no unique landmark outside the start room")
        obj = self._rand_choice(uniq)
        self.target_room = self.room_of(obj.cur_pos)
        desc = ObjDesc(obj.type, obj.color)
        desc.find_matching_objs(self)
        self.target_desc = desc
        self.goal = self._rand_choice(ROOMNAV_TEMPLATES).format(
            verb=self._rand_choice(NAV_VERBS), obj=desc.surface(self))

    def judge(self):
        return self.room_of(self.agent_pos) == self.target_room

    def goal_cells(self):
        return [c for c in self.room_cells(self.target_room) if self.grid.get(*c) is None]


def _make_obj(kind, color):
    from minigrid.core.world_object import Ball, Box, Key
    return {"key": Key, "ball": Ball, "box": Box}[kind](color)
