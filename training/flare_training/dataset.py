"""Reader for the demonstration shards written by `flare-train demos` (see `flare_training.demos`).

`DemoDataset(dirs)` lists every episode of every shard named in the directories' `index.json` files, reading only
the small per-episode members at start-up. Frames are loaded a shard at a time into a small LRU cache
(`cache_shards`), so datasets far larger than memory work.

`sample_windows(batch, window, rng)` draws SPOC-style training windows (`window` consecutive steps of one
episode; episodes shorter than the window are right-padded and masked). While all shards fit in the cache,
episodes are drawn uniformly from the whole dataset. Otherwise draws come from an *active set* of `cache_shards`
shards that is refreshed one random shard every `refresh_every` calls (a shuffle buffer, as in WebDataset): over
time every shard is visited, without re-reading a shard for every batch. Memory: a 250-episode shard holds
~65 MB (objectnav, fetch) to ~120 MB (roomvisit) of frames, ~10 MB (pickup); decompressing one takes ~0.3-0.6 s.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict

import numpy as np

from flare_training.demos import FORMAT, INDEX


class DemoDataset:
    def __init__(self, dirs, cache_shards: int = 8, refresh_every: int = 16, tasks=None):
        if isinstance(dirs, (str, os.PathLike)):
            dirs = [dirs]
        self.cache_shards = max(1, int(cache_shards))
        self.refresh_every = max(1, int(refresh_every))
        self.shards: list[str] = []
        ep_shard, ep_local, ep_len, ep_task, ep_goal, ep_exp, ep_seed = [], [], [], [], [], [], []
        self._offsets: list[np.ndarray] = []
        self.params = None
        for d in dirs:
            path = os.path.join(d, INDEX)
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path} not found (not a `flare-train demos` directory)")
            with open(path) as f:
                index = json.load(f)
            if index.get("format") != FORMAT:
                raise ValueError(f"{path}: unsupported format {index.get('format')!r}")
            if self.params is None:
                self.params = index["params"]
            elif index["params"]["render_tile"] != self.params["render_tile"]:
                raise ValueError("demo directories with different frame sizes cannot be mixed")
            for task, entry in index["tasks"].items():
                if tasks is not None and task not in tasks:
                    continue
                for sh in entry["shards"]:
                    sid = len(self.shards)
                    fpath = os.path.join(d, sh["file"])
                    self.shards.append(fpath)
                    with np.load(fpath, allow_pickle=False) as z:
                        offs = z["ep_offsets"]
                        goals = z["goal"]
                        exp = z["expert_length"]
                        seeds = z["seed"]
                    self._offsets.append(offs)
                    n = len(offs) - 1
                    ep_shard.append(np.full(n, sid, np.int32))
                    ep_local.append(np.arange(n, dtype=np.int32))
                    ep_len.append(np.diff(offs).astype(np.int32))
                    ep_task += [task] * n
                    ep_goal += [str(g) for g in goals]
                    ep_exp.append(exp.astype(np.int32))
                    ep_seed.append(seeds.astype(np.int64))
        cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
        self.ep_shard = cat(ep_shard, np.int32)
        self.ep_local = cat(ep_local, np.int32)
        self.lengths = cat(ep_len, np.int32)
        self.expert_lengths = cat(ep_exp, np.int32)
        self.seeds = cat(ep_seed, np.int64)
        self.tasks = ep_task
        self.goals = ep_goal
        self._cache: OrderedDict[int, dict] = OrderedDict()
        self._shard_eps = [np.flatnonzero(self.ep_shard == s) for s in range(len(self.shards))]
        self._active: list[int] | None = None
        self._calls = 0

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def num_steps(self) -> int:
        return int(self.lengths.sum())

    def task_names(self) -> list[str]:
        return sorted(set(self.tasks))

    def _shard(self, sid: int) -> dict:
        z = self._cache.get(sid)
        if z is not None:
            self._cache.move_to_end(sid)
            return z
        with np.load(self.shards[sid], allow_pickle=False) as f:
            z = {k: f[k] for k in ("rgb", "action", "in_hand", "step")}
        self._cache[sid] = z
        while len(self._cache) > self.cache_shards:
            self._cache.popitem(last=False)
        return z

    # Public shard-level access (for samplers that work on a shard's concatenated episodes).
    def shard_arrays(self, sid: int) -> dict:
        """Shard `sid`'s concatenated rgb/action/in_hand/step arrays (cached)."""
        return self._shard(int(sid))

    def shard_offsets(self, sid: int) -> np.ndarray:
        """(E+1,) row offsets of shard `sid`'s episodes."""
        return self._offsets[int(sid)]

    def shard_episodes(self, sid: int) -> np.ndarray:
        """Global episode indices stored in shard `sid` (in storage order)."""
        return self._shard_eps[int(sid)]

    def episode(self, i: int) -> dict:
        """Episode i: rgb (T,H,W,3) uint8, action (T,) int64, in_hand (T,) int64, step (T,) int64, goal,
        expert_length, task, seed."""
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(i)
        sid, k = int(self.ep_shard[i]), int(self.ep_local[i])
        z = self._shard(sid)
        a, b = self._offsets[sid][k], self._offsets[sid][k + 1]
        return dict(rgb=z["rgb"][a:b], action=z["action"][a:b].astype(np.int64),
                    in_hand=z["in_hand"][a:b].astype(np.int64), step=z["step"][a:b].astype(np.int64),
                    goal=self.goals[i], expert_length=int(self.expert_lengths[i]), task=self.tasks[i],
                    seed=int(self.seeds[i]))

    def iter_episodes(self):
        """All episodes in storage order (one shard in memory at a time)."""
        for i in range(len(self)):
            yield self.episode(i)

    # ------------------------------------------------------------------ windows
    def _candidates(self, rng) -> np.ndarray:
        n_sh = len(self.shards)
        if n_sh <= self.cache_shards:
            return np.arange(len(self))
        if self._active is None:
            self._active = [int(s) for s in rng.choice(n_sh, self.cache_shards, replace=False)]
        elif self._calls % self.refresh_every == 0:
            out = int(rng.integers(len(self._active)))
            rest = np.setdiff1d(np.arange(n_sh), self._active)
            self._active[out] = int(rng.choice(rest))
        return np.concatenate([self._shard_eps[s] for s in self._active])

    def sample_windows(self, batch: int, window: int, rng: np.random.Generator | None = None,
                       allow_partial: bool = False) -> dict:
        """`batch` windows of `window` consecutive steps of uniformly drawn episodes. The start is uniform over
        the full windows, [0, max(0, T - window)] (SPOC's sliding window); `allow_partial=True` draws it from
        [0, T) instead, so windows may run past the episode end (padded), which covers the last steps (`end`)
        more often. Returns numpy arrays:
        rgb (B,W,H,W,3) uint8, action/in_hand/step (B,W) int64, mask (B,W) bool (False = padding after the
        episode end), plus episode (B,) and start (B,) indices, goal / task lists (B) and expert_length (B,)."""
        if len(self) == 0:
            raise ValueError("empty dataset")
        rng = rng if rng is not None else np.random.default_rng()
        cand = self._candidates(rng)
        self._calls += 1
        eps = cand[rng.integers(0, len(cand), size=batch)]
        H = W_ = 7 * int(self.params["render_tile"])
        out = dict(rgb=np.zeros((batch, window, H, W_, 3), np.uint8),
                   action=np.zeros((batch, window), np.int64), in_hand=np.zeros((batch, window), np.int64),
                   step=np.zeros((batch, window), np.int64), mask=np.zeros((batch, window), bool),
                   episode=eps.astype(np.int64), start=np.zeros(batch, np.int64), goal=[], task=[],
                   expert_length=self.expert_lengths[eps].astype(np.int64))
        for b, i in enumerate(eps):
            T = int(self.lengths[i])
            s = int(rng.integers(0, T if allow_partial else max(1, T - window + 1)))
            n = min(window, T - s)
            sid, k = int(self.ep_shard[i]), int(self.ep_local[i])
            z = self._shard(sid)
            a = int(self._offsets[sid][k]) + s
            out["rgb"][b, :n] = z["rgb"][a:a + n]
            out["action"][b, :n] = z["action"][a:a + n]
            out["in_hand"][b, :n] = z["in_hand"][a:a + n]
            out["step"][b, :n] = z["step"][a:a + n]
            out["mask"][b, :n] = True
            out["start"][b] = s
            out["goal"].append(self.goals[i])
            out["task"].append(self.tasks[i])
        return out
