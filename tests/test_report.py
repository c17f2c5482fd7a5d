"""flare-train report: the plan, the analysis, the result cache, and one real end-to-end section at the smoke budget."""
from __future__ import annotations

import json
import pathlib
from dataclasses import replace

import pytest

from flare_training import report as R

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _record(job: R.Job, budget: R.Budget, success: float, curve=None, n=80) -> dict:
    k = round(success * n)
    return {"id": job.id, "job": R.asdict(job), "budget": budget.name, "spec": job.spec_hash(budget),
            "eval": {"success": _wilson(k, n), "sel": {"mean": success / 2, "ci95": [0.0, 1.0], "n": n},
                     "episode_length": {"mean": 10.0, "ci95": [9.0, 11.0], "n": n}, "episodes": n},
            "curve": curve or [], "train_wall_s": 60.0 if curve else 0.0, "steps": budget.steps}


def _wilson(k, n):
    from flare_training.evaluate import wilson_ci
    return wilson_ci(k, n)


def test_plan_same_budget_for_every_rl_row_and_shared_jobs():
    b = R.BUDGETS["small"]
    layout = R.plan(b)
    assert list(layout) == list(R.SECTIONS)
    rows = {label for rs in layout.values() for label, _, _ in rs}
    assert {"BC", "FLaRe", "scratch-sparse", "scratch-dense", "SB3 PPO (scratch)", "entropy 0.01", "lr x10",
            "shared actor/critic", "no critic warm-up", "BC zero-shot"} <= rows
    jobs = {j.id: j for rs in layout.values() for _, _, j in rs}
    # the ablation baseline is the same run as the Table I FLaRe cell of that family
    abl = [j for label, _, j in layout["ablations"] if label == "FLaRe"]
    assert abl and all(any(j is k or j.id == k.id for _, _, k in layout["table1"]) for j in abl)
    emb = [j for _, _, j in layout["embodiment"]]
    assert {j.embodiment for j in emb} == {"sim_locobot"} and {j.task for j in emb} == {"objectnav"}
    assert all(j.task in R.HELDOUT_TASKS for _, _, j in layout["table2"])
    # contrasting settings map to real PPOConfig fields (lr_scale is the report's own)
    from flare_training.ppo import PPOConfig
    fields = set(PPOConfig.__dataclass_fields__)
    for j in jobs.values():
        assert set(j.ppo) - {"lr_scale"} <= fields, j


def test_spec_hash_tracks_what_changes_results():
    b = R.BUDGETS["small"]
    j = R.Job("flare-pickup-sim-s0", "ppo", "pickup")
    assert j.spec_hash(b) == j.spec_hash(replace(b, workers=7))  # parallelism does not change results
    assert j.spec_hash(b) != j.spec_hash(replace(b, steps=b.steps * 2))
    assert j.spec_hash(b) != R.Job("flare-pickup-sim-s0", "ppo", "pickup", seed=1).spec_hash(b)


def test_steps_to_threshold_and_aggregate():
    curve = [[1024, 0.2, 10], [2048, 0.95, 20], [3072, 0.95, 30], [4096, 0.95, 40]]
    # smoothed over 3 updates: 0.2, 0.575, 0.7, 0.95 -> 90% first at 4096
    assert R.steps_to(curve, 0.9) == 4096
    assert R.steps_to(curve, 0.99) is None
    b = R.BUDGETS["small"]
    recs = [_record(R.Job(f"x-s{s}", "ppo", "pickup", seed=s), b, p, curve) for s, p in ((0, 0.5), (1, 0.7))]
    a = R.aggregate(recs)
    assert a["success"] == pytest.approx(0.6) and a["seeds"] == 2 and a["episodes"] == 160
    assert a["success_ci"][0] < 0.6 < a["success_ci"][1]
    assert a["steps_to_90"] == 4096 and a["steps_to_final"] == 4096 and a["wall_to_final_s"] == 40
    one = R.aggregate(recs[:1])
    assert one["success_ci"] == recs[0]["eval"]["success"]["ci95"]


def test_report_regenerates_from_cached_results_without_training(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    b = R.BUDGETS["smoke"]
    layout = R.plan(b, ["embodiment"])
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    success = {"BC zero-shot": 0.25, "FLaRe": 0.5, "scratch-sparse": 0.0}
    for label, _, job in layout["embodiment"]:
        curve = [[256, 0.1, 5.0], [512, success[label], 9.0]] if job.kind == "ppo" else None
        (results / "runs" / f"{job.id}.json").write_text(json.dumps(_record(job, b, success[label], curve)))

    def no_training(*a, **k):
        raise AssertionError("a cached report must not launch jobs")
    monkeypatch.setattr(R.subprocess, "call", no_training)
    runs = tmp_path / "runs"
    args = ["--budget", "smoke", "--sections", "embodiment", "--results", str(results), "--runs", str(runs)]
    assert R.main(args) == 0
    md = (results / "report.md").read_text()
    assert "| FLaRe | 50.0 [" in md and "| BC zero-shot | 25.0 [" in md and "| scratch-sparse | 0.0 [" in md
    assert (results / "curves_embodiment.png").stat().st_size > 1000
    rep = json.loads((results / "report.json").read_text())
    assert rep["missing"] == [] and rep["sections"]["embodiment"]["FLaRe"]["objectnav"]["success"] == 0.5
    first = md
    assert R.main(args + ["--only-report"]) == 0
    assert (results / "report.md").read_text() == first  # deterministic regeneration
    # a result produced under another budget spec is stale: the report lists it as missing, never uses it
    p = results / "runs" / f"{layout['embodiment'][1][2].id}.json"
    rec = json.loads(p.read_text())
    rec["spec"] = "0" * 16
    p.write_text(json.dumps(rec))
    assert R.main(args + ["--only-report"]) == 0
    assert json.loads((results / "report.json").read_text())["missing"] == [layout["embodiment"][1][2].id]


def test_table2_states_the_gain_over_zero_shot_per_task(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    b = R.BUDGETS["smoke"]
    layout = R.plan(b, ["table2"])
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    zero, flare = {"objectnav_localref": 0.25, "objectnav_affordance": 0.4}, {"objectnav_localref": 0.5,
                                                                              "objectnav_affordance": 0.5}
    for label, task, job in layout["table2"]:  # roomnav and the scratch rows stay missing
        if label in ("BC zero-shot", "FLaRe") and task in zero:
            ok = (zero if label == "BC zero-shot" else flare)[task]
            curve = [[256, 0.1, 5.0], [512, ok, 9.0]] if job.kind == "ppo" else None
            (results / "runs" / f"{job.id}.json").write_text(json.dumps(_record(job, b, ok, curve)))
    args = ["--budget", "smoke", "--sections", "table2", "--results", str(results), "--runs", str(tmp_path / "r"),
            "--only-report"]
    assert R.main(args) == 0
    md = (results / "report.md").read_text()
    assert ("FLaRe − BC zero-shot: objectnav_localref +25.0, objectnav_affordance +10.0 points; ≥ +20 on 1 of 2 "
            "measured (target: at least two of 3).") in md


@pytest.mark.timeout(600)
def test_smoke_budget_end_to_end(tmp_path, monkeypatch):
    """Real jobs in child processes: BC zero-shot eval, FLaRe PPO and scratch PPO on sim_locobot (a few seconds each)."""
    monkeypatch.chdir(ROOT)
    results, runs = tmp_path / "results", tmp_path / "runs"
    args = ["--budget", "smoke", "--sections", "embodiment", "--results", str(results), "--runs", str(runs)]
    assert R.main(args) == 0
    recs = {p.stem: json.loads(p.read_text()) for p in (results / "runs").glob("*.json")}
    assert set(recs) == {"bc-objectnav-sim_locobot", "flare-objectnav-sim_locobot-s0",
                         "scratch-sparse-objectnav-sim_locobot-s0"}
    flare = recs["flare-objectnav-sim_locobot-s0"]
    assert [c[0] for c in flare["curve"]] == [256, 512] and flare["eval"]["episodes"] == 2
    assert (runs / "flare-objectnav-sim_locobot-s0" / "bundle" / "policy.json").exists()
    bundle = json.loads((runs / "flare-objectnav-sim_locobot-s0" / "bundle" / "policy.json").read_text())
    assert bundle["embodiment"] == "sim_locobot"
    assert "0 to run" in _run_again(args)


def _run_again(args) -> str:
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert R.main(args) == 0
    return buf.getvalue()


def test_budget_learning_rates_and_shared_ppo_settings():
    b = replace(R.BUDGETS["small"], lr=1e-4, task_lr=(("pickup", 3e-5),), scratch_lr=3e-4, ppo=(("minibatches", 8),))
    flare = R.Job("flare-pickup-sim-s0", "ppo", "pickup")
    assert R.ppo_settings(flare, b)["lr"] == 3e-5
    assert R.ppo_settings(R.Job("flare-fetch-sim-s0", "ppo", "fetch"), b)["lr"] == 1e-4
    scratch = R.Job("scratch-sparse-pickup-sim-s0", "ppo", "pickup", ppo=R.RL_ROWS["scratch-sparse"])
    assert R.ppo_settings(scratch, b)["lr"] == 3e-4
    lr10 = R.Job("lr_x10-pickup-sim-s0", "ppo", "pickup", ppo=R.ABLATIONS["lr x10"])
    s = R.ppo_settings(lr10, b)
    assert s["lr"] == pytest.approx(3e-4) and "lr_scale" not in s and s["minibatches"] == 8
    row = R.Job("x-pickup-sim-s0", "ppo", "pickup", ppo={"minibatches": 2})  # a row's setting wins
    assert R.ppo_settings(row, b)["minibatches"] == 2
    from flare_training.ppo import PPOConfig
    assert set(R.ppo_settings(flare, b)) <= set(PPOConfig.__dataclass_fields__)
    # set fields change the hash; the older budgets (all later fields at defaults) keep theirs
    small = R.BUDGETS["small"]
    assert flare.spec_hash(small) != flare.spec_hash(replace(small, task_lr=(("pickup", 3e-5),)))
    assert flare.spec_hash(small) != flare.spec_hash(replace(small, ppo=(("minibatches", 8),)))
    assert "task_lr" not in small.hashed() and "workers" not in small.hashed()
