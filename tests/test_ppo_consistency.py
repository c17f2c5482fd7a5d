"""FLaRe PPO: the KV-cached rollout and the full-sequence update pass agree (first ratio exactly 1), including
episodes that end (by `end` or by truncation) and start inside a rollout and rollouts that start mid-episode;
the bootstrap value uses the rollout's context; the separate critic keeps value and policy gradients apart.

Also holds the helpers the other test_ppo_* files import (a micro bundle, a stub text encoder)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from flare_policy.bundle import load_bundle
from flare_policy.embodiments import SIM_ACTIONS
from flare_training.agent import GoalBank, make_input
from flare_training.bench import make_random_bundle
from flare_training.ppo import (
    EnvState, PPOConfig, build_actor_critic, collect_rollout, compute_gae, ppo_losses, ppo_update, value_net,
)
from flare_training.vecenv import SeedStream, SyncEnvs

MICRO = dict(d_model=32, visual_dim=16, fusion_layers=1, fusion_heads=2, fusion_ff=64, decoder_layers=2,
             decoder_heads=2, decoder_ff_multiple_of=32)
TOL = 1e-5


class StubTextEncoder:
    """Deterministic per-goal features instead of MiniLM (the PPO engine only needs encode())."""
    dim = 384

    def encode(self, goal: str) -> torch.Tensor:
        seed = int(hashlib.sha256(goal.encode()).hexdigest()[:8], 16)
        return torch.randn(2 + len(goal.split()), self.dim, generator=torch.Generator().manual_seed(seed))


def micro_bundle(path, seed: int = 0):
    return make_random_bundle(path, seed=seed, **MICRO)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.set_num_threads(1)
    return load_bundle(micro_bundle(tmp_path_factory.mktemp("ppo") / "micro"))


def _setup(bundle, separate=True, n_envs=4, rollout=40, allow_end=True, task="pickup"):
    cfg = PPOConfig(init=str(bundle.path), task=task, n_envs=n_envs, rollout=rollout, separate_critic=separate,
                    critic_warmup_steps=0)
    torch.manual_seed(0)
    ac = build_actor_critic(cfg, bundle).eval()
    mask = bundle.action_mask().clone()
    if not allow_end:  # episodes can then only end by truncation (pickup: max_steps 64)
        mask[SIM_ACTIONS.index("end")] = False
    envs = SyncEnvs(task, n_envs, SeedStream(0, n_envs))
    state = EnvState(envs.reset(), np.full(n_envs, bundle.config.n_actions, np.int64))
    return cfg, ac, mask, envs, state, GoalBank(StubTextEncoder())


def _recompute(ac, ro, bank, cfg, mask):
    with torch.no_grad():
        dist, value = ac(ro.policy_input(bank, "cpu"), window=cfg.window, action_mask=mask)
        return dist.log_prob(torch.as_tensor(ro.action)).numpy(), value.numpy()


@pytest.mark.parametrize("separate,allow_end", [(True, True), (True, False), (False, True)],
                         ids=["separate-end", "separate-truncation", "shared-end"])
def test_rollout_matches_update_pass(bundle, separate, allow_end):
    cfg, ac, mask, envs, state, bank = _setup(bundle, separate, allow_end=allow_end)
    worst, inside, mid_start = 0.0, False, False
    for r in range(2):  # the second rollout starts in the middle of the first one's episodes
        step_before = state.obs["step"].copy()
        ro, episodes = collect_rollout(ac, envs, state, bank, cfg, mask, "cpu")
        logp, value = _recompute(ac, ro, bank, cfg, mask)
        dlogp, dvalue = np.abs(logp - ro.logprob).max(), np.abs(value - ro.value).max()
        worst = max(worst, dlogp, dvalue)
        assert dlogp < TOL and dvalue < TOL, (r, dlogp, dvalue)
        assert np.array_equal(ro.step[:, 0], step_before)
        inside |= bool(ro.done[:, :-1].any() and (ro.step[:, 1:] == 0).any())
        mid_start |= bool(r == 1 and (ro.step[:, 0] > 0).any())
        if not allow_end:
            assert not any(e["success"] for e in episodes) and all(e["l"] == 64 for e in episodes)  # truncations
        # bootstrap value = full-sequence value of the next observation appended to the rollout
        nxt = state.obs
        cat = lambda a, b: np.concatenate([a, np.asarray(b)[:, None]], 1)  # noqa: E731
        inp = make_input(cat(ro.rgb, nxt["rgb"]), cat(ro.goal, bank.index(nxt["goal"])), cat(ro.prev, state.prev),
                         cat(ro.in_hand, nxt["in_hand"]), cat(ro.step, nxt["step"]), bank)
        with torch.no_grad():
            _, v_ext, _ = value_net(ac)(inp, window=cfg.window)
        assert np.abs(v_ext[:, -1].numpy() - ro.last_value).max() < TOL
    # the situations the test is about actually occurred
    assert inside, "no episode ended and a new one started inside a rollout"
    assert mid_start, "no rollout started in the middle of an episode"
    print(f"max |delta| logp/value over rollouts: {worst:.2e}")


def test_first_update_epoch_ratio_is_one(bundle):
    cfg, ac, mask, envs, state, bank = _setup(bundle, rollout=32)
    cfg.update_chunk = 3  # chunks of 3 + 1 envs
    ro, _ = collect_rollout(ac, envs, state, bank, cfg, mask, "cpu")
    adv, ret = compute_gae(ro, cfg.gamma, cfg.gae_lambda)
    b = {"action": torch.as_tensor(ro.action), "logprob": torch.as_tensor(ro.logprob),
         "value": torch.as_tensor(ro.value), "adv": torch.as_tensor(adv), "ret": torch.as_tensor(ret)}
    opt = torch.optim.Adam(ac.parameters(), lr=cfg.lr)
    from flare_training.ppo import World

    m = ppo_update(ac, opt, ro.policy_input(bank, "cpu"), b, cfg, mask, False, World(), np.random.default_rng(0))
    assert m["consistency/max_abs_dlogp"] < TOL and m["consistency/max_abs_dvalue"] < TOL
    assert m["clip_frac"] < 1.0 and np.isfinite(m["loss"])


@pytest.mark.parametrize("norm_adv", [False, True])
def test_chunked_update_has_the_whole_batch_gradient(bundle, norm_adv):
    """update_chunk (gradient accumulation over env chunks) gives the same step as one pass."""
    import copy

    from flare_training.ppo import World

    cfg, ac, mask, envs, state, bank = _setup(bundle, rollout=24)
    ro, _ = collect_rollout(ac, envs, state, bank, cfg, mask, "cpu")
    adv, ret = compute_gae(ro, cfg.gamma, cfg.gae_lambda)
    adv = adv + np.random.default_rng(0).normal(size=adv.shape).astype(np.float32)
    b = {"action": torch.as_tensor(ro.action), "logprob": torch.as_tensor(ro.logprob),
         "value": torch.as_tensor(ro.value), "adv": torch.as_tensor(adv), "ret": torch.as_tensor(ret)}
    inp = ro.policy_input(bank, "cpu")
    after = []
    for chunk in (0, 1, 3):
        m = copy.deepcopy(ac)
        c = PPOConfig(**{**cfg.__dict__, "update_chunk": chunk, "epochs": 1, "norm_adv": norm_adv})
        metrics = ppo_update(m, torch.optim.SGD(m.parameters(), lr=1.0), inp, b, c, mask, False, World(),
                             np.random.default_rng(0))
        after.append((m.state_dict(), metrics))
    for sd, metrics in after[1:]:
        for k, v in after[0][0].items():
            torch.testing.assert_close(sd[k], v, atol=1e-6, rtol=1e-5)
        for k in ("loss", "policy_loss", "value_loss", "entropy", "approx_kl"):
            assert abs(metrics[k] - after[0][1][k]) < 1e-5, k


def test_gae_stops_at_episode_ends():
    from flare_training.ppo import Rollout

    ro = Rollout.empty(1, 4, (1, 1, 3))
    ro.reward[0] = [0, 10, 0, 0]
    ro.value[0] = [1, 2, 3, 4]
    ro.done[0] = [False, True, False, False]
    ro.last_value[:] = 5
    adv, ret = compute_gae(ro, gamma=0.5, lam=1.0)
    # episode 1: returns 0 + 0.5 * 10 = 5, 10 (no bootstrap across the end); episode 2 bootstraps 5
    np.testing.assert_allclose(ret[0], [5, 10, 0.5 * 0.5 * 5, 0.5 * 5])
    np.testing.assert_allclose(adv[0], ret[0] - ro.value[0])


# ------------------------------------------------------------------------------ critic separation
def _grads(module):
    return {n: (None if p.grad is None else p.grad.abs().max().item()) for n, p in module.named_parameters()}


def _losses(bundle, separate, warmup=False):
    cfg, ac, mask, envs, state, bank = _setup(bundle, separate, rollout=24)
    ro, _ = collect_rollout(ac, envs, state, bank, cfg, mask, "cpu")
    adv, ret = compute_gae(ro, cfg.gamma, cfg.gae_lambda)
    adv = adv + np.random.default_rng(0).normal(size=adv.shape).astype(np.float32)  # non-zero policy gradient
    b = {"action": torch.as_tensor(ro.action), "logprob": torch.as_tensor(ro.logprob),
         "value": torch.as_tensor(ro.value), "adv": torch.as_tensor(adv), "ret": torch.as_tensor(ret + 1.0)}
    return cfg, ac, mask, ro.policy_input(bank, "cpu"), b


def test_separate_critic_gradients_do_not_cross(bundle):
    cfg, ac, mask, inp, b = _losses(bundle, separate=True)
    out = ppo_losses(ac, inp, b, cfg, mask, warmup=False)
    out["value_loss"].backward(retain_graph=True)
    assert all(g is None or g == 0 for g in _grads(ac.actor).values()), "value loss reached the actor copy"
    assert any(g for g in _grads(ac.critic).values()), "value loss did not train the critic copy"
    ac.zero_grad(set_to_none=True)
    (out["policy_loss"] - 0.01 * out["entropy"]).backward()
    assert all(g is None or g == 0 for g in _grads(ac.critic).values()), "policy gradient reached the critic copy"
    assert any(g for n, g in _grads(ac.actor).items() if n.startswith("decoder")), "no policy gradient in the actor"


def test_shared_critic_value_gradient_reaches_trunk(bundle):
    cfg, ac, mask, inp, b = _losses(bundle, separate=False)
    ppo_losses(ac, inp, b, cfg, mask, warmup=False)["value_loss"].backward()
    g = _grads(ac.actor)
    assert any(v for n, v in g.items() if n.startswith("decoder.")) and any(v for n, v in g.items()
                                                                              if n.startswith("visual_encoder."))


def test_warmup_leaves_actor_unchanged(bundle):
    from flare_training.ppo import World

    cfg, ac, mask, inp, b = _losses(bundle, separate=True)
    actor0 = {k: v.clone() for k, v in ac.actor.state_dict().items()}
    critic0 = {k: v.clone() for k, v in ac.critic.state_dict().items()}
    opt = torch.optim.Adam(ac.parameters(), lr=1e-3)
    m = ppo_update(ac, opt, inp, b, cfg, mask, True, World(), np.random.default_rng(0))
    assert "policy_loss" not in m
    assert all(torch.equal(v, ac.actor.state_dict()[k]) for k, v in actor0.items())
    assert any(not torch.equal(v, ac.critic.state_dict()[k]) for k, v in critic0.items())


def test_fresh_value_head_and_critic_copy(bundle):
    cfg = PPOConfig(init=str(bundle.path))
    ac = build_actor_critic(cfg, bundle)
    sd, bd = ac.critic.state_dict(), bundle.model.state_dict()
    assert all(torch.equal(sd[k], bd[k]) for k in bd if not k.startswith("critic."))
    assert not torch.equal(sd["critic.fc.weight"], bd["critic.fc.weight"])
    assert all(torch.equal(v, bd[k]) for k, v in ac.actor.state_dict().items())
    rnd = build_actor_critic(PPOConfig(init=str(bundle.path), init_weights="random", seed=3), bundle)
    assert not torch.equal(rnd.actor.state_dict()["decoder.output.weight"], bd["decoder.output.weight"])


def test_config_yaml_defaults_and_overrides():
    from pathlib import Path

    from flare_training.ppo import build_parser, config_from_args

    yml = Path(__file__).resolve().parents[1] / "training" / "configs" / "ppo_objectnav.yaml"
    cfg = config_from_args(build_parser().parse_args(["--config", str(yml), "--total-steps", "4096",
                                                       "--no-separate-critic", "--entropy-coef", "0.01"]))
    assert (cfg.total_steps, cfg.separate_critic, cfg.entropy_coef) == (4096, False, 0.01)
    flare = PPOConfig()  # the dataclass defaults are FLaRe's recipe; the shipped config keeps them
    for k in ("lr", "clip", "epochs", "minibatches", "rollout", "gamma", "gae_lambda", "value_coef", "norm_adv",
              "max_grad_norm", "dense_reward", "critic_init", "init_weights"):
        assert getattr(cfg, k) == getattr(flare, k), k
    assert (flare.lr, flare.clip, flare.epochs, flare.rollout, flare.entropy_coef) == (2e-5, 0.1, 4, 128, 0.0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--no-such-option", "1"])
