"""Fast egocentric rendering, pixel-identical to MiniGrid's `get_pov_render` / `RGBImgPartialObsWrapper`.

MiniGrid slices and rotates a Grid object and renders its 49 tiles one by one at every step. Here the view cells
are read straight from the world grid, visibility uses the same propagation as `Grid.process_vis`, and the
image is assembled from a lookup table of tiles produced by MiniGrid's own (cached) `Grid.render_tile`, so the
pixels are the same (checked in tests/test_envs.py).
"""
from __future__ import annotations

import functools

import numpy as np
from minigrid.core.constants import DIR_TO_VEC
from minigrid.core.grid import Grid
from minigrid.core.world_object import Wall

_WALL = Wall()


def view_cells(level, view: int | None = None, direction: int | None = None):
    """The agent's view as MiniGrid sees it after `process_vis` (looking along `direction`, default the
    agent's heading; sim_locobot's camera pans away from it).

    Returns (cells, mask, world): cells[i][j] (i = column left->right, j = row top->bottom, the agent at
    (view//2, view-1) facing up) with invisible cells set to None, mask[i][j] visibility, and world[i][j] the
    world coordinates of each view cell."""
    V = view or level.agent_view_size
    h = V // 2
    ax, ay = int(level.agent_pos[0]), int(level.agent_pos[1])
    fx, fy = (int(v) for v in DIR_TO_VEC[level.agent_dir if direction is None else direction])
    rx, ry = -fy, fx
    tlx, tly = ax + fx * (V - 1) - rx * h, ay + fy * (V - 1) - ry * h
    grid = level.grid
    W, H = grid.width, grid.height
    gcells = grid.grid
    cells = [[None] * V for _ in range(V)]
    world = [[None] * V for _ in range(V)]
    for i in range(V):
        col = cells[i]
        wcol = world[i]
        for j in range(V):
            x = tlx - fx * j + rx * i
            y = tly - fy * j + ry * i
            wcol[j] = (x, y)
            col[j] = gcells[y * W + x] if (0 <= x < W and 0 <= y < H) else _WALL
    # Grid.process_vis
    mask = [[False] * V for _ in range(V)]
    mask[h][V - 1] = True
    for j in range(V - 1, -1, -1):
        for i in range(0, V - 1):
            if not mask[i][j]:
                continue
            c = cells[i][j]
            if c is not None and not c.see_behind():
                continue
            mask[i + 1][j] = True
            if j > 0:
                mask[i + 1][j - 1] = True
                mask[i][j - 1] = True
        for i in range(V - 1, 0, -1):
            if not mask[i][j]:
                continue
            c = cells[i][j]
            if c is not None and not c.see_behind():
                continue
            mask[i - 1][j] = True
            if j > 0:
                mask[i - 1][j - 1] = True
                mask[i][j - 1] = True
    for i in range(V):
        for j in range(V):
            if not mask[i][j]:
                cells[i][j] = None
    return cells, mask, world


@functools.lru_cache(maxsize=None)
def _object_tiles(tile: int) -> frozenset[bytes]:
    """The pixels of every ball, box and key (each colour) as a visible egocentric tile."""
    from minigrid.core.constants import COLOR_NAMES
    from minigrid.core.world_object import Ball, Box, Key

    from .levels import OBJ_TYPES

    classes = {"ball": Ball, "box": Box, "key": Key}
    return frozenset(np.asarray(Grid.render_tile(classes[t](color), agent_dir=None, highlight=True, tile_size=tile),
                                np.uint8).tobytes() for t in OBJ_TYPES for color in COLOR_NAMES)


def object_in_front(rgb: np.ndarray, tile: int = 8) -> np.ndarray:
    """(..., V*tile, V*tile, 3) egocentric frames -> (...) bool: a ball, box or key fills the cell in front of the
    agent (the agent sits at the bottom centre, facing up). This is where a policy commits (`end`, `pickup`)."""
    rgb = np.asarray(rgb)
    V = rgb.shape[-2] // tile
    front = rgb[..., (V - 2) * tile:(V - 1) * tile, (V // 2) * tile:(V // 2 + 1) * tile, :]
    flat = np.ascontiguousarray(front).reshape(-1, tile * tile * 3)
    known = _object_tiles(tile)
    return np.array([row.tobytes() in known for row in flat], bool).reshape(rgb.shape[:-3])


class PovRenderer:
    """Renders the egocentric view of a level with a tile lookup table."""

    def __init__(self, tile: int = 8):
        self.tile = int(tile)
        self._index: dict = {}
        self._tiles: list[np.ndarray] = []
        self._lut: np.ndarray | None = None

    def _tile(self, key, obj, agent: bool, highlight: bool) -> int:
        idx = self._index.get(key)
        if idx is None:
            img = Grid.render_tile(obj, agent_dir=3 if agent else None, highlight=highlight, tile_size=self.tile)
            idx = self._index[key] = len(self._tiles)
            self._tiles.append(np.asarray(img, np.uint8))
            self._lut = None
        return idx

    def render(self, level, view: int | None = None, direction: int | None = None) -> np.ndarray:
        V = view or level.agent_view_size
        cells, mask, _ = view_cells(level, V, direction)
        h = V // 2
        idx = np.empty((V, V), np.int32)  # [row j, column i]
        for i in range(V):
            for j in range(V):
                obj = cells[i][j]
                hl = mask[i][j]
                if i == h and j == V - 1:
                    obj = level.carrying
                    key = ("agent", obj.encode() if obj is not None else None, hl)
                    idx[j, i] = self._tile(key, obj, True, hl)
                else:
                    key = (obj.encode() if obj is not None else None, hl)
                    idx[j, i] = self._tile(key, obj, False, hl)
        if self._lut is None:
            self._lut = np.stack(self._tiles)
        t = self.tile
        return self._lut[idx].transpose(0, 2, 1, 3, 4).reshape(V * t, V * t, 3)
