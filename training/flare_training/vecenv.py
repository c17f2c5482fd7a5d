"""Vectorised mini-CHORES environments for PPO: in-process `SyncEnvs` and worker-process `AsyncEnvs`.

Both step N environments with auto-reset: when an episode ends, `step` returns the *new* episode's first
observation in that env's row and puts the finished episode's summary in `infos[i]["episode"]`
({"r": return, "l": length, "success": bool, "seed": int}) together with the final info (`"final_info"`).

Seeds are deterministic: env i of a vector (global index `rank * n_envs + i` is folded into `SeedStream.base`)
plays episode k with seed `base + i + n_envs * k` of the `train` split, so every rank and env gets its own
stream and a run can be re-created exactly. Each env also records the actions of its current episode: `state()`
returns {episode counter, seed, actions, return so far} per env and `restore(states)` rebuilds the exact env
state by reset(seed) + replaying the actions (mini-CHORES is deterministic given seed and actions), which is
how `flare-train ppo --resume` continues without pickling environments.

Level generation prints "Sampling rejected ..." to stdout: resets run with stdout redirected (and worker
processes send their stdout to /dev/null).

Choice of default (`make_vec_env(kind="auto")` -> sync), measured with `python -m flare_training.vecenv` on the
2-core development machine while other jobs were running (random non-`end` actions, objectnav, 56x56 RGB,
env steps/s summed over envs; two runs, 1-min load average 2.1 and 5.8):

    n_envs | sync        | async, 2 workers | async, 4 workers
    8      | 8802 / 4194 | 4999 / 1854      | 3039 / 1364
    16     | 5541 / 4730 | 3407 / 1579      | 1815 / 1995

A mini-CHORES step (MiniGrid step + 56x56 render) costs ~0.15 ms, less than pickling the observation through a
pipe and waking a worker, so async loses at every size here; in PPO the env is also only ~2% of the time
(the transformer dominates, see `flare-train bench throughput`). Async stays available for machines with many
idle cores (`vec: async`, `vec_workers`).
"""
from __future__ import annotations

import contextlib
import io
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

RANK_STRIDE = 10_000_000  # seeds between ranks' streams (each rank: base + rank * RANK_STRIDE)


@dataclass(frozen=True)
class SeedStream:
    """Episode k of env i gets seed `lo + (base + i + n_envs * k) mod |split|` of `split` (picklable)."""
    base: int
    n_envs: int
    split: str = "train"

    def __call__(self, env_index: int, episode: int) -> int:
        from .envs import SPLITS

        lo, hi = SPLITS[self.split]
        return lo + (self.base + env_index + self.n_envs * episode) % (hi - lo)


class _Quiet(io.TextIOBase):
    def write(self, s):
        return len(s)


class EnvSlot:
    """One environment plus its place in the seed stream and the action log of its current episode."""

    def __init__(self, env, index: int, seeds: SeedStream):
        self.env, self.index, self.seeds = env, index, seeds
        self.episode = -1
        self.seed = None
        self.actions: list[int] = []
        self.ret = 0.0

    def reset(self, episode: int = 0):
        self.episode = episode
        self.seed = self.seeds(self.index, episode)
        self.actions, self.ret = [], 0.0
        with contextlib.redirect_stdout(_Quiet()):
            obs, _ = self.env.reset(seed=self.seed)
        return obs

    def step(self, action: int):
        obs, reward, term, trunc, info = self.env.step(int(action))
        self.actions.append(int(action))
        self.ret += float(reward)
        if term or trunc:
            info = {"final_info": info, "episode": {"r": self.ret, "l": len(self.actions),
                                                    "success": bool(info.get("success", False)),
                                                    "seed": self.seed, "pct_rooms": info.get("pct_rooms")}}
            obs = self.reset(self.episode + 1)
        return obs, float(reward), bool(term), bool(trunc), info

    def state(self) -> dict:
        return {"episode": self.episode, "seed": self.seed, "actions": list(self.actions), "ret": self.ret}

    def restore(self, st: dict):
        obs = self.reset(int(st["episode"]))
        if self.seed != st["seed"]:
            raise ValueError(f"env {self.index}: seed stream mismatch ({self.seed} != {st['seed']}); "
                             "was n_envs, rank or seed changed?")
        for a in st["actions"]:
            obs, reward, term, trunc, _ = self.env.step(int(a))
            self.actions.append(int(a))
            self.ret += float(reward)
            if term or trunc:
                raise ValueError(f"env {self.index}: replaying seed {self.seed} ended the episode early "
                                 "(environment not deterministic?)")
        return obs


def _stack(obs_list) -> dict:
    return {"rgb": np.stack([o["rgb"] for o in obs_list]),
            "in_hand": np.array([int(o["in_hand"]) for o in obs_list], dtype=np.int64),
            "step": np.array([int(o["step"]) for o in obs_list], dtype=np.int64),
            "goal": [o["goal"] for o in obs_list]}


def _concat(parts) -> dict:
    return {"rgb": np.concatenate([p["rgb"] for p in parts]),
            "in_hand": np.concatenate([p["in_hand"] for p in parts]),
            "step": np.concatenate([p["step"] for p in parts]),
            "goal": [g for p in parts for g in p["goal"]]}


class _Slots:
    """A list of EnvSlots with batched calls (used directly by SyncEnvs and inside each AsyncEnvs worker)."""

    def __init__(self, task: str, indices, seeds: SeedStream, env_kwargs: dict):
        from .envs.backends import make_backend_env

        self.slots = [EnvSlot(make_backend_env(task, **env_kwargs), i, seeds) for i in indices]

    def reset(self, episodes=None):
        return _stack([s.reset(0 if episodes is None else episodes[j]) for j, s in enumerate(self.slots)])

    def step(self, actions):
        out = [s.step(a) for s, a in zip(self.slots, actions)]
        obs = _stack([o[0] for o in out])
        rew = np.array([o[1] for o in out], dtype=np.float32)
        term = np.array([o[2] for o in out], dtype=bool)
        trunc = np.array([o[3] for o in out], dtype=bool)
        return obs, rew, term, trunc, [o[4] for o in out]

    def state(self):
        return [s.state() for s in self.slots]

    def restore(self, states):
        return _stack([s.restore(st) for s, st in zip(self.slots, states)])


class SyncEnvs:
    """All environments in this process, stepped one after the other."""

    def __init__(self, task: str, n_envs: int, seeds: SeedStream, **env_kwargs):
        self.n_envs = n_envs
        self._slots = _Slots(task, range(n_envs), seeds, env_kwargs)

    def reset(self, episodes=None) -> dict:
        return self._slots.reset(episodes)

    def step(self, actions):
        """actions: (N,) ints -> obs dict (batched), rewards (N,), terminated (N,), truncated (N,), infos."""
        return self._slots.step(np.asarray(actions).tolist())

    def state(self) -> list[dict]:
        return self._slots.state()

    def restore(self, states: list[dict]) -> dict:
        if len(states) != self.n_envs:
            raise ValueError(f"restore: {len(states)} env states for {self.n_envs} envs")
        return self._slots.restore(states)

    def close(self):
        for s in self._slots.slots:  # AI2-THOR envs stop their Unity process
            s.env.close()


def _worker(conn, task, indices, seeds, env_kwargs):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.stdout = open(os.devnull, "w")  # minigrid level generation chatter
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    try:
        slots = _Slots(task, indices, seeds, env_kwargs)
        conn.send(("ok", None))
        while True:
            cmd, arg = conn.recv()
            if cmd == "close":
                for s in slots.slots:  # AI2-THOR envs stop their Unity process (atexit does not run here)
                    s.env.close()
                break
            conn.send(("ok", getattr(slots, cmd)(*arg)))
    except KeyboardInterrupt:
        pass
    except BaseException as e:  # noqa: BLE001 - report to the parent instead of dying silently
        import traceback

        try:
            conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        except OSError:
            pass
    finally:
        conn.close()


class AsyncEnvs:
    """Environments in `workers` processes (contiguous chunks of envs each), talking over pipes."""

    def __init__(self, task: str, n_envs: int, seeds: SeedStream, workers: int | None = None,
                 start_method: str = "forkserver", **env_kwargs):
        self.n_envs = n_envs
        workers = max(1, min(workers or os.cpu_count() or 1, n_envs))
        ctx = mp.get_context(start_method)
        chunks = np.array_split(np.arange(n_envs), workers)
        self.chunks = [c.tolist() for c in chunks]
        self.conns, self.procs = [], []
        for idx in self.chunks:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(child, task, idx, seeds, env_kwargs), daemon=True)
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)
        for c in self.conns:
            self._recv(c)

    @staticmethod
    def _recv(conn):
        status, payload = conn.recv()
        if status != "ok":
            raise RuntimeError(f"env worker failed: {payload}")
        return payload

    def _call(self, cmd, args_per_worker):
        for c, a in zip(self.conns, args_per_worker):
            c.send((cmd, a))
        return [self._recv(c) for c in self.conns]

    def reset(self, episodes=None) -> dict:
        args = [((None if episodes is None else [episodes[i] for i in idx]),) for idx in self.chunks]
        return _concat(self._call("reset", args))

    def step(self, actions):
        actions = np.asarray(actions).tolist()
        parts = self._call("step", [([actions[i] for i in idx],) for idx in self.chunks])
        obs = _concat([p[0] for p in parts])
        return (obs, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]),
                np.concatenate([p[3] for p in parts]), [i for p in parts for i in p[4]])

    def state(self) -> list[dict]:
        return [s for part in self._call("state", [()] * len(self.conns)) for s in part]

    def restore(self, states: list[dict]) -> dict:
        if len(states) != self.n_envs:
            raise ValueError(f"restore: {len(states)} env states for {self.n_envs} envs")
        return _concat(self._call("restore", [([states[i] for i in idx],) for idx in self.chunks]))

    def close(self):
        for c in self.conns:
            with contextlib.suppress(OSError, BrokenPipeError):
                c.send(("close", None))
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        self.conns, self.procs = [], []

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()


def make_vec_env(kind: str, task: str, n_envs: int, seeds: SeedStream, workers: int | None = None, **env_kwargs):
    """kind: "sync", "async" or "auto" (= sync, see the module docstring for the measurements)."""
    if kind in ("sync", "auto"):
        return SyncEnvs(task, n_envs, seeds, **env_kwargs)
    if kind == "async":
        return AsyncEnvs(task, n_envs, seeds, workers=workers, **env_kwargs)
    raise ValueError(f"unknown vec env kind {kind!r} (sync, async or auto)")


def measure(task: str = "objectnav", n_envs: int = 8, kind: str = "sync", seconds: float = 3.0,
            workers: int | None = None) -> float:
    """Env steps/s over all envs with random non-terminal actions (auto-reset at max_steps included)."""
    envs = make_vec_env(kind, task, n_envs, SeedStream(0, n_envs), workers=workers)
    rng = np.random.default_rng(0)
    try:
        envs.reset()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            envs.step(rng.integers(0, 6, size=n_envs))  # no `end`: episodes run to max_steps
            n += n_envs
        return n / (time.perf_counter() - t0)
    finally:
        envs.close()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="measure sync vs async vector env throughput")
    ap.add_argument("--task", default="objectnav")
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    for n in (8, 16):
        row = [f"sync {measure(a.task, n, 'sync', a.seconds):.0f}"]
        for w in (2, 4):
            row.append(f"async/{w}w {measure(a.task, n, 'async', a.seconds, workers=w):.0f}")
        print(f"n_envs {n}: " + "  ".join(row), flush=True)
