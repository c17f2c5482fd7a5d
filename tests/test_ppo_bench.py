"""`flare-train bench throughput --json`: ours and Stable-Baselines3 on the same env, last line one JSON object."""
from __future__ import annotations

import json

from flare_training import bench, ppo

from test_ppo_consistency import StubTextEncoder, micro_bundle


def test_bench_throughput_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ppo, "_load_text_encoder", lambda bundle: StubTextEncoder())
    micro = str(micro_bundle(tmp_path / "micro"))
    assert bench.main(["throughput", "--init", micro, "--task", "pickup", "--steps", "256", "--n-envs", "2",
                       "--threads", "1", "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["ours"]["steps"] == last["sb3"]["steps"] == 256
    assert last["ours_steps_per_s"] > 0 and last["sb3_steps_per_s"] > 0 and last["ratio"] > 0
    for who in ("ours", "sb3"):
        assert {"env_s", "inference_s", "update_s"} <= set(last[who])
    floor = last["ours_floor"]
    assert floor["gflop_per_env_step"] > 0
    assert last["ours_steps_per_s"] <= floor["floor_steps_per_s"]  # a floor no real run beats


def test_bench_update_profiles_a_chunk(capsys):
    assert bench.main(["update", "--envs", "1", "--rollout", "8", "--iters", "1", "--no-compile", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["envs"] == 1 and res["rollout"] == 8 and res["eager_ms"] > 0 and "compiled_ms" not in res
    shares = [r["share"] for r in res["top_ops"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.0001
    assert any(r["op"] in ("aten::mm", "aten::addmm") for r in res["top_ops"])  # the model's GEMMs are profiled
    assert "flags" in res["cpu"]
