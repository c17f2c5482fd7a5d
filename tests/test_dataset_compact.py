"""Compact (tile-index) demo storage: exact frames, large memory savings, raw fallback where frames have too many
distinct patches or are not tile-aligned."""
import subprocess
import sys

import numpy as np
import pytest

from flare_training.dataset import DemoDataset, TileCodec


def _demos(out, embodiment="sim", tasks="objectnav,pickup"):
    cmd = [sys.executable, "-m", "flare_training.cli", "demos", "--task", tasks, "--episodes", "8",
           "--out", str(out), "--workers", "1", "--shard-size", "4", "--embodiment", embodiment, "--quiet"]
    subprocess.run(cmd, check=True, timeout=300)
    return out


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    return _demos(tmp_path_factory.mktemp("demos"))


def test_compact_frames_equal_raw_frames(demos):
    compact, raw = DemoDataset([demos]), DemoDataset([demos], compact=False)
    compact.preload()
    raw.preload()
    assert len(compact) == len(raw) == 16
    for i in range(len(raw)):
        assert np.array_equal(compact.episode(i)["rgb"], raw.episode(i)["rgb"])
    assert all("tiles" in z and "rgb" not in z for z in compact._cache.values())
    # 49 uint16 per 56x56x3 frame (+ the small patch table) instead of 9,408 bytes
    assert compact.memory_bytes() * 20 < raw.memory_bytes()
    a = compact.sample_windows(4, 16, np.random.default_rng(3))
    b = raw.sample_windows(4, 16, np.random.default_rng(3))
    assert np.array_equal(a["rgb"], b["rgb"]) and np.array_equal(a["action"], b["action"])


def test_resized_locobot_frames_are_exact(tmp_path):
    ds = DemoDataset([_demos(tmp_path, "sim_locobot", "objectnav")])
    raw = DemoDataset([tmp_path], compact=False)
    ds.preload()
    for i in range(len(ds)):
        assert np.array_equal(ds.episode(i)["rgb"], raw.episode(i)["rgb"])


def test_codec_refuses_misaligned_and_round_trips_random_tiles():
    codec = TileCodec(8)
    assert codec.encode(np.zeros((2, 20, 24, 3), np.uint8)) is None
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    grid = tiles[rng.integers(0, 5, (3, 7, 7))]  # (3, 7, 7, 8, 8, 3)
    frames = grid.transpose(0, 1, 3, 2, 4, 5).reshape(3, 56, 56, 3)
    ids = codec.encode(frames)
    assert ids.shape == (3, 7, 7) and ids.dtype == np.uint16 and len(codec.table) == 5
    assert np.array_equal(codec.decode(ids), frames)
    noise = rng.integers(0, 256, (1400, 56, 56, 3), dtype=np.uint8)  # 68,600 distinct patches > uint16
    assert codec.encode(noise) is None
