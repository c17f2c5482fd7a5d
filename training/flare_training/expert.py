"""Shortest-path experts for the mini-CHORES families, with explicit `end` / `sub_done`.

* objectnav, pickup, fetch, objectnav_localref, objectnav_affordance: `minigrid.utils.baby_ai_bot.BabyAIBot`
  (BFS shortest paths, explores rooms it has not seen; it knows the instruction but only the cells it has seen).
  The bot's "done" (stack empty) becomes `end`. For pick-up instructions the bot would drop the object again
  after picking it up (BabyAI's `PickupInstr` plan is GoNextTo, Pickup, Drop); the final Drop is removed so that
  the target is held when `end` is issued. `BABYAI_DONE_ACTIONS` is never used. Two changes to the bot: it never
  plans through objects (it would move "blockers" with pickup/drop; the layouts never need that, so it explores
  until it sees a free route), and it answers `end` as soon as the success condition holds (useful when it
  relabels a learner's states).
* roomvisit, roomnav: a full-map planner (Dijkstra over (cell, heading), turn = move = 1, a closed door costs an
  extra `toggle`). roomvisit: `sub_done` on the first step inside every unmarked room, greedy nearest-unmarked-room
  order, `end` once all rooms are marked. roomnav: shortest path into the target room, then `end`.

`run_expert_episode` runs one episode under a hard per-episode watchdog (SIGALRM when called from the main
thread; elsewhere only a deadline checked between steps) because the BabyAI bot can loop inside one `replan()`.
"""
from __future__ import annotations

import heapq
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from minigrid.core.actions import Actions
from minigrid.envs.babyai.core.verifier import PickupInstr
from minigrid.utils.baby_ai_bot import BabyAIBot, DropSubgoal

from flare_policy.embodiments import SIM_ACTIONS
from flare_training.envs.render import view_cells

MOVE, LEFT, RIGHT, PICKUP, DROP, TOGGLE, END, SUB_DONE = range(len(SIM_ACTIONS))
_TO_MINIGRID = {MOVE: Actions.forward, LEFT: Actions.left, RIGHT: Actions.right, PICKUP: Actions.pickup,
                DROP: Actions.drop, TOGGLE: Actions.toggle}
_FROM_MINIGRID = {int(v): k for k, v in _TO_MINIGRID.items()}
_FROM_MINIGRID[int(Actions.done)] = END
_DIRS = ((1, 0), (0, 1), (-1, 0), (0, -1))  # minigrid agent_dir 0..3


class ExpertTimeout(Exception):
    """Raised by the watchdog when an expert episode takes too long."""


@dataclass
class Episode:
    """One expert episode. Observations are recorded *before* each action (BabyAI convention)."""
    task: str
    seed: int
    goal: str
    rgb: np.ndarray        # (T, H, W, 3) uint8
    action: np.ndarray     # (T,) uint8, index into SIM_ACTIONS
    in_hand: np.ndarray    # (T,) uint8
    step: np.ndarray       # (T,) int32, the observation's episode step (0..T-1)
    expert_length: int     # T: number of actions including the final `end`
    success: bool

    def __len__(self):
        return int(self.expert_length)


class _Bot(BabyAIBot):
    """BabyAIBot with a faster (identical) visibility update and without "blocker" paths.

    The levels guarantee that every cell is reachable without moving objects, but the bot only plans over the
    cells it has seen and, when the only *seen* route passes through an object, it picks that object up and
    drops it elsewhere. That adds pickup/drop detours to navigation demos and cannot work on `sim_locobot`
    (pickup is a no-op there), so here the bot explores instead until it sees a free route."""

    def _shortest_path(self, accept_fn, try_with_blockers=False):
        return super()._shortest_path(accept_fn, try_with_blockers=False)

    def _check_erroneous_box_opening(self, action):
        pass  # boxes never open in mini-CHORES (toggle only acts on doors)

    def _find_obj_pos(self, obj_desc, adjacent=False):
        best_d, best_pos, best_obj = None, None, None
        carrying = self.mission.unwrapped.carrying
        for obj, pos in zip(obj_desc.obj_set, obj_desc.obj_poss):
            if obj.type == "wall" or obj is carrying or not self.vis_mask[pos]:
                continue
            path, _, _ = self._shortest_path(lambda p, cell, pos=pos: p == pos)
            if path is None:
                continue
            d = len(path)
            if d == 0:
                d = 3 if adjacent else 2
            if adjacent and d == 1:
                d = 3
            if best_d is None or d < best_d:
                best_d, best_pos, best_obj = d, pos, obj
        return best_obj, best_pos

    def _process_obs(self):
        cells, mask, world = view_cells(self.mission.unwrapped)
        W, H = self.vis_mask.shape
        for i, col in enumerate(mask):
            for j, vis in enumerate(col):
                if vis:
                    x, y = world[i][j]
                    if 0 <= x < W and 0 <= y < H:
                        self.vis_mask[x, y] = True


def _env_attr(env, name, default=None):
    try:
        return env.get_wrapper_attr(name)
    except AttributeError:
        return default


class Expert:
    """Expert for an env right after `reset()`: call `act(last_action)` every step (None first, then the action
    actually executed, so it can relabel a learner's deviations DAgger-style). Returns an index into SIM_ACTIONS."""

    def __init__(self, env):
        self.env = env
        self.level = env.unwrapped
        self.allowed = _env_attr(env, "allowed")
        if self.level.expert_kind == "bot":
            self.bot = _Bot(self.level)
            if isinstance(self.level.instrs, PickupInstr) and self.bot.stack \
                    and isinstance(self.bot.stack[0], DropSubgoal):
                self.bot.stack.pop(0)
            self.planner = None
        else:
            self.bot = None
            self.planner = _Planner(self.level)
        self._first = True

    def act(self, last_action: int | None = None) -> int:
        if self.bot is not None:
            if self._first or last_action is None:
                taken = None
            else:
                la = int(last_action)
                noop = la in (END, SUB_DONE) or (self.allowed is not None and la not in self.allowed)
                taken = Actions.done if noop else _TO_MINIGRID[la]
            self._first = False
            a = _FROM_MINIGRID[int(self.bot.replan(taken))]  # always replan: keeps the bot's memory current
            # Goal condition already met (e.g. a learner being relabelled walked up to / picked up a target,
            # or passed in front of another matching object): `end` now.
            return END if self.level.judge() else a
        self._first = False
        return self.planner.act()


class _Planner:
    """Full-map shortest-path planner for roomvisit and roomnav."""

    def __init__(self, level):
        self.level = level
        self.plan: list[int] = []
        self.expect = None  # (pos, dir) expected before the next planned action

    def _state(self):
        lv = self.level
        return (int(lv.agent_pos[0]), int(lv.agent_pos[1])), int(lv.agent_dir)

    def act(self) -> int:
        lv = self.level
        pos, d = self._state()
        room = lv.room_of(pos)
        if lv.family == "roomvisit":
            if room is not None and room not in lv.marked_rooms:
                self.plan = []
                return SUB_DONE
            if len(lv.marked_rooms) == lv.num_rooms:
                return END
            goals = {c for r in range(lv.num_rooms) if r not in lv.marked_rooms for c in lv.room_cells(r)}
        else:  # roomnav
            if room == lv.target_room:
                return END
            goals = set(lv.room_cells(lv.target_room))
        if not self.plan or self.expect != (pos, d):
            self.plan = self._dijkstra(pos, d, goals)
            if not self.plan:
                return END  # nothing reachable (never happens on generated layouts): give up
        a = self.plan[0]
        if a == MOVE:
            cell = lv.grid.get(pos[0] + _DIRS[d][0], pos[1] + _DIRS[d][1])
            if cell is not None and cell.type == "door" and not cell.is_open:
                self.expect = (pos, d)
                return TOGGLE
            self.expect = ((pos[0] + _DIRS[d][0], pos[1] + _DIRS[d][1]), d)
        elif a == LEFT:
            self.expect = (pos, (d - 1) % 4)
        else:
            self.expect = (pos, (d + 1) % 4)
        self.plan.pop(0)
        return a

    def _dijkstra(self, pos, d, goals) -> list[int]:
        lv = self.level
        grid = lv.grid
        start = (pos, d)
        best = {start: 0}
        prev = {}
        heap = [(0, 0, pos, d)]
        tie = 0
        while heap:
            cost, _, p, dd = heapq.heappop(heap)
            if best.get((p, dd), 1 << 30) < cost:
                continue
            if p in goals:
                acts = []
                s = (p, dd)
                while s != start:
                    s, a = prev[s]
                    acts.append(a)
                return acts[::-1]
            nxt = []
            q = (p[0] + _DIRS[dd][0], p[1] + _DIRS[dd][1])
            cell = grid.get(*q) if 0 <= q[0] < lv.width and 0 <= q[1] < lv.height else None
            in_bounds = 0 <= q[0] < lv.width and 0 <= q[1] < lv.height
            if in_bounds and (cell is None or cell.type == "door"):
                extra = 1 if (cell is not None and not cell.is_open) else 0
                nxt.append(((q, dd), 1 + extra, MOVE))
            nxt.append(((p, (dd - 1) % 4), 1, LEFT))
            nxt.append(((p, (dd + 1) % 4), 1, RIGHT))
            for s, c, a in nxt:
                nc = cost + c
                if nc < best.get(s, 1 << 30):
                    best[s] = nc
                    prev[s] = ((p, dd), a)
                    tie += 1
                    heapq.heappush(heap, (nc, tie, s[0], s[1]))
        return []


@contextmanager
def watchdog(seconds: float | None):
    """Raise ExpertTimeout after `seconds` of wall time (SIGALRM; only armed in the main thread)."""
    armed = bool(seconds) and hasattr(signal, "setitimer") \
        and threading.current_thread() is threading.main_thread()
    if not armed:
        yield
        return

    def _alarm(signum, frame):
        raise ExpertTimeout(f"expert episode exceeded {seconds} s")

    outer = signal.getitimer(signal.ITIMER_REAL)  # e.g. pytest-timeout's alarm: restored afterwards
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    t0 = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if outer[0] > 0:
            signal.setitimer(signal.ITIMER_REAL, max(outer[0] - (time.monotonic() - t0), 1e-3), outer[1])


def run_expert(env, seed: int, watchdog_s: float | None = 3.0, record: bool = True):
    """Run the expert on `env` reset with `seed`. Returns (Episode | None, status) with status one of
    "ok", "failed" (episode ended without success), "hung" (watchdog) or "error" (the expert raised)."""
    deadline = time.monotonic() + watchdog_s if watchdog_s else None
    frames, actions, in_hand, steps = [], [], [], []
    try:
        with watchdog(watchdog_s):
            obs, info = env.reset(seed=seed)
            goal = obs["goal"]
            expert = Expert(env)
            last = None
            while True:
                a = expert.act(last)
                if record:
                    frames.append(obs["rgb"])
                    in_hand.append(obs["in_hand"])
                    steps.append(obs["step"])
                actions.append(a)
                obs, _, terminated, truncated, info = env.step(a)
                last = a
                if terminated or truncated:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise ExpertTimeout(f"expert episode exceeded {watchdog_s} s")
    except ExpertTimeout:
        return None, "hung"
    except Exception:  # the BabyAI bot asserts on situations it cannot handle
        return None, "error"
    if not info["success"]:
        return None, "failed"
    T = len(actions)
    if record:
        rgb = np.stack(frames).astype(np.uint8, copy=False)
    else:
        rgb = np.zeros((0,) + env.observation_space["rgb"].shape, np.uint8)
    ep = Episode(task=_env_attr(env, "task", ""), seed=int(seed), goal=goal, rgb=rgb,
                 action=np.asarray(actions, np.uint8),
                 in_hand=np.asarray(in_hand, np.uint8), step=np.asarray(steps, np.int32), expert_length=T,
                 success=True)
    return ep, "ok"


def run_expert_episode(env, seed: int, watchdog_s: float = 3.0) -> Episode | None:
    """One recorded expert episode for `seed`, or None if the expert hung, raised or did not succeed."""
    return run_expert(env, seed, watchdog_s, record=True)[0]


_LENGTH_ENVS: dict = {}


def expert_length(task: str, seed: int, embodiment: str = "sim", watchdog_s: float = 3.0) -> int:
    """Number of actions (including `end`) the expert needs for (task, seed) on a fresh env; -1 if it fails
    (SEL is then undefined, as FLaRe's L_opt < 0)."""
    from flare_training.envs import make_env
    key = (task, embodiment)
    env = _LENGTH_ENVS.get(key)
    if env is None:
        env = _LENGTH_ENVS[key] = make_env(task, embodiment=embodiment, render=False)
    ep, _ = run_expert(env, seed, watchdog_s, record=False)
    return ep.expert_length if ep is not None else -1
