"""Reader for the demonstration shards written by `flare-train demos` (see `flare_training.demos`).

`DemoDataset(dirs)` lists every episode of every shard named in the directories' `index.json` files, reading only
the small per-episode members at start-up. Frames are loaded a shard at a time into a small LRU cache
(`cache_shards`), so datasets far larger than memory work.

Frames are kept *compact* by default (`TileCodec`): a MiniGrid frame is a 7x7 grid of tile_size x tile_size
patches drawn from a few hundred distinct patches, so each frame is stored as 49 uint16 indices into a shared
patch table (98 bytes instead of 9,408 at 56x56: ~96x less). Decoding is one table lookup, exact by
construction, and checked on every shard (a shard that does not round-trip, or whose patches would overflow
the uint16 table, e.g. camera images, is kept raw). With compact frames every shard of a 100k-episode dataset (~2.7M frames, ~270 MB) stays
in memory, so `cache_shards=0` (all) is the default and no batch ever waits for a decompression.

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


class TileCodec:
    """Exact compact storage of tile-aligned frames: (n, H, W, 3) uint8 <-> (n, H/t, W/t) uint16 indices into a
    growing table of distinct t x t x 3 patches (shared by all shards of a dataset)."""

    def __init__(self, tile: int):
        self.tile = int(tile)
        self.table = np.zeros((0, self.tile * self.tile * 3), np.uint8)
        self._index: dict[bytes, int] = {}
        # patch -> 64-bit key by a fixed random projection; collisions cannot corrupt data: decode(encode(x))
        # is compared with x and a mismatching shard is stored raw
        self._proj = np.random.default_rng(0).integers(1, 2**62, self.table.shape[1], dtype=np.uint64) | np.uint64(1)

    def encode(self, rgb: np.ndarray) -> np.ndarray | None:
        """Indices (n, H/t, W/t) uint16, or None if the frames are not tile-aligned or do not round-trip."""
        n, H, W, C = rgb.shape
        t = self.tile
        if H % t or W % t or C != 3 or n == 0:
            return None
        patches = rgb.reshape(n, H // t, t, W // t, t, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, t * t * 3)
        keys = patches.astype(np.uint64) @ self._proj  # wraps mod 2**64: a hash
        uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        blobs = [patches[row].tobytes() for row in first]
        unseen = [j for j, b in enumerate(blobs) if b not in self._index]
        if len(self._index) + len(unseen) > np.iinfo(np.uint16).max + 1:
            return None  # too many distinct patches for uint16 indices (not a tile world)
        for j in unseen:
            self._index[blobs[j]] = len(self._index)
        if unseen:
            self.table = np.concatenate([self.table, patches[first[unseen]]])
        ids = np.array([self._index[b] for b in blobs], np.int64)
        out = ids[inv.reshape(-1)].astype(np.uint16).reshape(n, H // t, W // t)
        return out if np.array_equal(self.decode(out), rgb) else None

    def decode(self, ids: np.ndarray) -> np.ndarray:
        """(..., h, w) indices -> (..., h*t, w*t, 3) uint8 frames."""
        t = self.tile
        *lead, h, w = ids.shape
        p = self.table[ids].reshape(*lead, h, w, t, t, 3)
        return np.swapaxes(p, -4, -3).reshape(*lead, h * t, w * t, 3)


class DemoDataset:
    def __init__(self, dirs, cache_shards: int = 0, refresh_every: int = 16, tasks=None, compact: bool = True):
        """cache_shards: shards kept in memory (0 = all); compact: store frames as tile indices (TileCodec)."""
        if isinstance(dirs, (str, os.PathLike)):
            dirs = [dirs]
        self._cache_arg = int(cache_shards)
        self.refresh_every = max(1, int(refresh_every))
        self.shards: list[str] = []
        ep_shard, ep_local, ep_len, ep_task, ep_goal, ep_exp, ep_seed = [], [], [], [], [], [], []
        self._offsets: list[np.ndarray] = []
        self.params = None
        self.sources: list[str] = []  # the directories, in order
        self.shard_source: list[int] = []  # index into `sources` of each shard
        for d in dirs:
            self.sources.append(str(d))
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
                    self.shard_source.append(len(self.sources) - 1)
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
        self.cache_shards = self._cache_arg if self._cache_arg > 0 else max(1, len(self.shards))
        self.codec = TileCodec(int(self.params["render_tile"])) if compact and self.params else None
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
            z = {k: f[k] for k in ("rgb", "action", "in_hand", "step", "executed") if k in f.files}
        tiles = self.codec.encode(z["rgb"]) if self.codec is not None else None
        if tiles is not None:
            z["tiles"] = tiles
            del z["rgb"]
        self._cache[sid] = z
        while len(self._cache) > self.cache_shards:
            self._cache.popitem(last=False)
        return z

    def _frames(self, z: dict, a: int, b: int) -> np.ndarray:
        return self.codec.decode(z["tiles"][a:b]) if "tiles" in z else z["rgb"][a:b]

    def preload(self, progress: bool = False) -> None:
        """Load (and encode) every shard that fits in the cache now, instead of on first use."""
        ids = range(min(len(self.shards), self.cache_shards))
        if progress:
            from tqdm import tqdm

            ids = tqdm(ids, desc="loading demo shards", unit="shard")
        for sid in ids:
            self._shard(sid)

    def memory_bytes(self) -> int:
        """Bytes of frame/label arrays held in the shard cache (plus the tile table)."""
        table = self.codec.table.nbytes if self.codec is not None else 0
        return table + sum(v.nbytes for z in self._cache.values() for v in z.values())

    # Public shard-level access (for samplers that work on a shard's concatenated episodes).
    def shard_arrays(self, sid: int) -> dict:
        """Shard `sid`'s concatenated action/in_hand/step arrays (cached); frames through `shard_frames`."""
        return self._shard(int(sid))

    def shard_frames(self, sid: int, a: int, b: int) -> np.ndarray:
        """Frames [a, b) of shard `sid` as (b - a, H, W, 3) uint8."""
        return self._frames(self._shard(int(sid)), a, b)

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
        return dict(rgb=self._frames(z, a, b), action=z["action"][a:b].astype(np.int64),
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
            out["rgb"][b, :n] = self._frames(z, a, a + n)
            out["action"][b, :n] = z["action"][a:a + n]
            out["in_hand"][b, :n] = z["in_hand"][a:a + n]
            out["step"][b, :n] = z["step"][a:a + n]
            out["mask"][b, :n] = True
            out["start"][b] = s
            out["goal"].append(self.goals[i])
            out["task"].append(self.tasks[i])
        return out
