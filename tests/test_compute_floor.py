"""Arithmetic floors printed by `flare-policy bench step` and `flare-train bench throughput`: the FLOP counts
they rest on are exact for known layers, and the PPO floor counts per env step."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from flare_policy.bench import count_flops, mlp_rate
from flare_training import bench, ppo

from test_ppo_consistency import StubTextEncoder, micro_bundle


def test_count_flops_linear_and_attention():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    x = torch.randn(10, 64)
    assert sum(count_flops(lambda: lin(x)).values()) == 2 * 10 * 64 * 32
    q, k, v = (torch.randn(3, 2, 5, 8) for _ in range(3))  # (B, heads, S, head_dim)
    # attention = q k^T and attn v: two (S x D) x (D x S)-sized matmuls per head
    assert sum(count_flops(lambda: F.scaled_dot_product_attention(q, k, v)).values()) == 2 * (2 * 3 * 2 * 5 * 5 * 8)


def test_mlp_rate_is_a_finite_positive_rate():
    r = mlp_rate(1, 256, 64, 128, repeats=3)
    assert math.isfinite(r) and r > 1e6  # any CPU does more than 1 MFLOP/s
    assert mlp_rate(1, 256, 64, 128, int8=True, repeats=3) > 1e6


@pytest.fixture()
def micro(tmp_path, monkeypatch):
    monkeypatch.setattr(ppo, "_load_text_encoder", lambda bundle: StubTextEncoder())
    return str(micro_bundle(tmp_path / "micro"))


def test_ppo_floor_counts_per_env_step(micro):
    torch.set_num_threads(1)
    a = bench.ours_floor("pickup", 4, 1, micro, rollout=16, epochs=4)
    b = bench.ours_floor("pickup", 4, 1, micro, rollout=16, epochs=1)
    one_env = bench.ours_floor("pickup", 1, 1, micro, rollout=16, epochs=1)
    assert a["gflop_update_per_env_step"] == pytest.approx(4 * b["gflop_update_per_env_step"], rel=1e-9)
    assert a["gflop_rollout_per_env_step"] == pytest.approx(b["gflop_rollout_per_env_step"], rel=1e-9)
    # per env step: only the goal bank's text adapter (once per pass, not per env) is shared
    assert one_env["gflop_update_per_env_step"] == pytest.approx(b["gflop_update_per_env_step"], rel=0.01)
    # forward + backward of actor and critic copies per update pass: more than 2 cached forward steps
    assert b["gflop_update_per_env_step"] > b["gflop_rollout_per_env_step"] > 0
    assert a["floor_steps_per_s"] == pytest.approx(a["gemm_fp32_gflops"] / a["gflop_per_env_step"], rel=1e-9)
