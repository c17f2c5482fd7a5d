"""Decision probe: the object in front is classified against the goal correctly, and the probe's figures add up."""
import math
import pathlib

import torch

from flare_training.decision_probe import KINDS, probe, relation
from flare_training.envs import make_env

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_relation_of_every_object_to_the_goal():
    env = make_env("objectnav")
    seen = set()
    for seed in range(20):
        env.reset(seed=seed)
        level = env.env.unwrapped
        t = level.target_desc
        for obj in level.grid.grid:
            if obj is None or obj.type not in ("ball", "box", "key"):
                continue
            k = relation(obj, level)
            seen.add(k)
            if k == 0:
                assert obj.type == t.type and obj.color == t.color
            elif k == 1:
                assert obj.type == t.type and obj.color != t.color
            elif k == 2:
                assert obj.color == t.color and obj.type != t.type
            else:
                assert obj.color != t.color and obj.type != t.type
    assert {0, 3} <= seen  # every layout holds its goal and some unrelated objects


def test_probe_figures_add_up():
    from flare_policy.bundle import load_bundle

    torch.set_num_threads(1)
    bundle = load_bundle(ROOT / "models" / "sim_tiny_bc")  # walks up to objects (a random policy rarely does)
    r = probe(bundle, "pickup", 4)
    assert r["action"] == "pickup" and list(r["kinds"]) == list(KINDS)
    assert 0.0 <= r["success"] <= 1.0
    steps = sum(k["steps"] for k in r["kinds"].values())
    assert steps > 0 and r["kinds"]["goal"]["steps"] > 0
    for k in r["kinds"].values():
        if k["steps"]:
            assert 0.0 <= k["mean_prob"] <= 1.0 and 0.0 <= k["taken"] <= 1.0
    assert math.isnan(r["auc"]) or 0.0 <= r["auc"] <= 1.0
    pairs = r["colour_pairs"]  # a breakdown of the same-type, other-colour steps, most wrong commits first
    assert pairs  # these seeds face one (grey goal, green key)
    assert sum(e["steps"] for e in pairs) == r["kinds"][KINDS[1]]["steps"]
    assert all(e["goal"] != e["seen"] and 0 <= e["commits"] <= e["steps"] for e in pairs)
    assert [e["commits"] for e in pairs] == sorted((e["commits"] for e in pairs), reverse=True)


def test_goal_text_shares_of_a_full_factorial_design():
    from flare_policy.text import TextEncoder
    from flare_training.decision_probe import goal_text_shares

    shares = goal_text_shares(TextEncoder("minilm"))
    assert set(shares) == {"verb", "article", "colour", "type"}
    assert all(0.0 <= v <= 1.0 for v in shares.values())
    assert sum(shares.values()) <= 1.0 + 1e-6  # main effects of a balanced design partition part of the variance
    assert shares["colour"] > 5 * shares["article"]  # MiniLM does encode the colour word
