"""Frozen text encoders: one encoder forward per distinct goal; MiniLM (real weights) makes semantic sense."""
import pytest
import torch
import torch.nn.functional as F

from flare_policy.convert import T5Shape, random_t5
from flare_policy.text import TextEncoder, text_encoder_from_spec

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def minilm():
    return TextEncoder("minilm")


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("t5")
    random_t5(d, T5Shape(vocab=128, d_model=64, d_kv=16, heads=4, d_ff=128, layers=2, buckets=8))
    return d


def count_forwards(enc):
    calls = []
    enc.model.register_forward_hook(lambda *a: calls.append(1))
    return calls


def sentence(enc, goal):
    return F.normalize(enc.encode(goal).mean(0), dim=0)  # sentence-transformers' mean pooling


def test_minilm_caches_per_goal(minilm):
    calls = count_forwards(minilm)
    a = minilm.encode("go to the kitchen")
    assert a.shape[1] == 384 and a.dtype == torch.float32 and a.shape[0] >= 5  # token-level, [CLS] ... [SEP]
    assert minilm.encode("go to the kitchen") is a
    text, mask = minilm.encode_batch(["go to the kitchen", "find a mug", "go to the kitchen"])
    assert len(calls) == 2  # two distinct goals, two encoder forwards
    assert text.shape[:2] == mask.shape and mask.sum(1).tolist() == [a.shape[0], mask[1].sum().item(), a.shape[0]]
    assert torch.equal(text[0, : a.shape[0]], a) and not text[1, ~mask[1]].any()  # zero padding


def test_minilm_similarity_is_sensible(minilm):
    ref = sentence(minilm, "pick up the red ball")
    para = sentence(minilm, "grab the red ball")
    other = sentence(minilm, "open the blue door")
    assert float(ref @ para) > 0.8 and float(ref @ other) < 0.5
    assert float(ref @ para) > float(ref @ other) + 0.3


def test_t5_local_encoder_caches_and_appends_eos(t5_dir):
    enc = text_encoder_from_spec({"kind": "t5", "path": str(t5_dir)})
    calls = count_forwards(enc)
    feats = enc.encode("find the red mug")
    assert feats.shape == (5, 64)  # four words + </s>
    assert enc.tokenizer("find the red mug")["input_ids"][-1] == 1  # T5 appends </s> (id 1), no BOS
    for _ in range(3):
        enc.encode("find the red mug")
    assert len(calls) == 1 and enc.calls == 1
    small = TextEncoder("t5", t5_dir, cache_size=2)  # LRU: the oldest goal is evicted
    for g in ("go to the bed", "find the sofa", "go to the bed", "open the door"):
        small.encode(g)
    assert small.calls == 3 and list(small._cache) == ["go to the bed", "open the door"]


def test_text_encoder_errors(t5_dir):
    with pytest.raises(ValueError, match="needs a local directory"):
        TextEncoder("t5")
    with pytest.raises(ValueError, match="unknown text encoder 'clip'"):
        TextEncoder("clip")
    with pytest.raises(OSError):
        TextEncoder("t5", t5_dir / "missing")
    assert text_encoder_from_spec({"kind": "t5", "path": "/nowhere"}, override_path=str(t5_dir)).path == str(t5_dir)


def test_goal_bank_encodes_a_steps_new_goals_in_one_batch():
    from flare_training.agent import GoalBank

    enc = TextEncoder("minilm")  # own instance: an empty cache
    calls = count_forwards(enc)
    bank = GoalBank(enc)
    goals = ["go to the red ball", "find a purple key", "go to the red ball", "grab the grey box"]
    idx = bank.index(goals)
    assert len(calls) == 1  # three new goals, one batched forward
    assert idx.tolist() == [0, 1, 0, 2]
    assert bank.index(["find a purple key"]).tolist() == [1] and len(calls) == 1
    bank.index(["take the green ball"])  # a single new goal: one plain forward
    assert len(calls) == 2
    text, mask = bank.tensors()
    single = TextEncoder("minilm")
    for row, g in enumerate(["go to the red ball", "find a purple key", "grab the grey box"]):
        ref = single.encode(g)
        assert int(mask[row].sum()) == ref.shape[0]
        torch.testing.assert_close(text[row, : ref.shape[0]], ref, atol=1e-5, rtol=1e-4)  # padding is masked
