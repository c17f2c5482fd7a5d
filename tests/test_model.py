"""flare_policy.model: FLaRe shapes, KV-cache == full-sequence, episode isolation, action masking, separate critic."""
import pytest
import torch
from torch import nn

from flare_policy.embodiments import get_embodiment
from flare_policy.model import ActorCritic, PolicyConfig, PolicyInput, PolicyNet, apply_action_mask, flare_small3, tiny

torch.set_num_threads(1)


def flare_reduced() -> PolicyConfig:
    """flare_small3's structure (two cameras of DINOv2-style feature maps, 20 actions, dropout 0.1, 3+3 layers)
    at a CPU-test width; the 7x12 maps are pooled to 3x4 tokens to keep 650-step episodes fast."""
    return PolicyConfig(d_model=64, visual_dim=32, visual_grid=(3, 4), text_dim=48, fusion_heads=4, fusion_ff=128,
                        decoder_heads=4, decoder_ff_multiple_of=32).validate()


CONFIGS = {"tiny": lambda: tiny(n_actions=20), "tiny_flat": lambda: tiny(n_actions=20, visual_flat_readout=8),
           "flare_reduced": flare_reduced}


def make_model(cfg: PolicyConfig, seed: int = 0) -> PolicyNet:
    torch.manual_seed(seed)
    m = PolicyNet(cfg).eval()  # eval: dropout off
    nn.init.orthogonal_(m.actor.linear.weight, gain=1.0)  # O(1) logits, so a 1e-5 tolerance means something
    return m


def episode_steps(T: int) -> torch.Tensor:
    """(3, T) episode steps: env0 one long episode; env1 resets at 120 and 450; env2 starts mid-episode
    (step 37, its earlier steps not in the sequence) and resets at 260."""
    def seg(*parts):
        return torch.cat([torch.arange(a, a + n) for a, n in parts])[:T]
    return torch.stack([seg((0, T)), seg((0, 120), (0, 330), (0, T)), seg((37, 260), (0, T))])


def make_inputs(cfg: PolicyConfig, step: torch.Tensor, seed: int = 1) -> PolicyInput:
    g = torch.Generator().manual_seed(seed)
    B, T = step.shape
    if cfg.vision == "cnn":
        images = {c: torch.randint(0, 256, (B, T, *cfg.image_size, 3), generator=g, dtype=torch.uint8)
                  for c in cfg.cameras}
    else:
        images = {c: torch.randn(B, T, cfg.visual_dim, 7, 12, generator=g) for c in cfg.cameras}
    G, L = 3, 6
    text = torch.randn(G, L, cfg.text_dim, generator=g)
    text_mask = torch.arange(L)[None] < torch.tensor([[6], [3], [4]])  # goals of different lengths
    episode = torch.cumsum((step == 0).long(), 1)
    prev = torch.randint(0, cfg.n_actions, (B, T), generator=g)
    prev[step == 0] = cfg.n_actions  # "no previous action" at every episode start
    return PolicyInput(images, text, text_mask, (episode + torch.arange(B)[:, None]) % G, prev,
                       torch.randint(0, 2, (B, T), generator=g), step)


def run_cached(model: PolicyNet, inp: PolicyInput, window: int):
    B, T = inp.shape
    cache = model.new_cache(B, window)
    outs = []
    with torch.no_grad():
        for t in range(T):
            starts = inp.step[:, t] == 0
            if starts.any():
                cache.reset(starts)
            sl = PolicyInput({k: v[:, t: t + 1] for k, v in inp.images.items()}, inp.text, inp.text_mask,
                             *(x[:, t: t + 1] for x in (inp.goal_index, inp.prev_action, inp.in_hand, inp.step)))
            outs.append(model(sl, cache=cache))
    return [torch.cat(xs, dim=1) for xs in zip(*outs)]  # logits, value, belief


def test_flare_small3_parameter_count():
    m = PolicyNet(flare_small3())
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert m.n_trainable() == 20_958_741
    ve = m.visual_encoder  # flare_checkpoint_spec.md section 3 table
    assert count(ve.fusion_xformer) == 9_457_152
    assert count(m.decoder) == 10_489_344
    assert count(ve.visual_compressor) == 459_776
    assert count(ve.visual_adapter) == count(ve.text_adapter) == 263_680
    assert m.decoder.layers[0].feed_forward.w1.weight.shape == (1536, 512)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cached_equals_full_sequence_over_long_episodes(name):
    cfg = CONFIGS[name]()
    model = make_model(cfg)
    step = episode_steps(650)  # env0's episode is 650 steps long
    inp = make_inputs(cfg, step)
    logits = {}
    for window in (200, 1000):  # rolling window shorter than the episode (ring buffer wraps), and >= it
        with torch.no_grad():
            full = model(inp, window=window)
        cached = run_cached(model, inp, window)
        for a, b, what in zip(full, cached, ("logits", "value", "belief")):
            err = (a - b).abs().max().item()
            assert err <= 1e-5, f"{name} window {window}: {what} max abs diff {err:.2e}"
        assert full[0].abs().mean() > 0.1  # the comparison is not between near-zero numbers
        logits[window] = full[0]
    # the window matters: late steps of the long episode differ between W=200 and W=1000
    short, long_ = logits[200], logits[1000]
    assert (short[0, 400:] - long_[0, 400:]).abs().max() > 1e-3
    assert torch.equal(short[0, :200], long_[0, :200])


@pytest.mark.parametrize("mode", ["full", "cached"])
def test_no_cross_episode_attention(mode):
    cfg = tiny(n_actions=20)
    model = make_model(cfg)
    step = episode_steps(160)
    inp = make_inputs(cfg, step)

    def outputs(x):
        with torch.no_grad():
            return model(x, window=1000)[0] if mode == "full" else run_cached(model, x, 1000)[0]

    def perturbed(t0, t1):  # new images / in-hand / previous action for env1 over steps [t0, t1)
        x = make_inputs(cfg, step)
        cam = cfg.cameras[0]
        x.images[cam][1, t0:t1] = 255 - x.images[cam][1, t0:t1]
        x.in_hand[1, t0:t1] = 1 - x.in_hand[1, t0:t1]
        x.prev_action[1, t0 + 1:t1] = (x.prev_action[1, t0 + 1:t1] + 1) % cfg.n_actions
        return x

    base = outputs(inp)
    other = outputs(perturbed(0, 120))  # env1's first episode is steps 0..119
    assert (other[1, :120] - base[1, :120]).abs().max() > 1e-3  # the change is visible inside that episode
    assert torch.allclose(other[1, 120:], base[1, 120:], atol=1e-6, rtol=0)  # ... and nowhere after it
    assert torch.allclose(other[[0, 2]], base[[0, 2]], atol=1e-6, rtol=0)  # nor in other envs
    # control: the same change inside the second episode does reach its later steps
    later = outputs(perturbed(130, 140))
    assert (later[1, 140:] - base[1, 140:]).abs().max() > 1e-3


def test_action_mask_gives_minus_inf_and_is_never_chosen():
    emb = get_embodiment("locobot")
    mask = torch.tensor(emb.action_mask())
    cfg = tiny(n_actions=len(emb.actions))
    model = make_model(cfg)
    inp = make_inputs(cfg, episode_steps(20))
    with torch.no_grad():
        model.actor.linear.bias[~mask] = 100.0  # the masked actions would win by far without the mask
        logits = model(inp, action_mask=mask)[0]
    assert torch.isneginf(logits[..., ~mask]).all()
    assert torch.isfinite(logits[..., mask]).all()
    assert mask[logits.argmax(-1)].all()
    samples = torch.distributions.Categorical(logits=logits).sample((200,))
    assert mask[samples].all()
    raw = torch.zeros(4, len(mask))
    assert torch.equal(apply_action_mask(raw, None), raw)
    assert torch.isneginf(apply_action_mask(raw, mask)[:, ~mask]).all()


def _grads(module):
    return [p.grad for p in module.parameters() if p.grad is not None and p.grad.abs().sum() > 0]


def test_separate_critic_isolates_value_and_policy_gradients():
    cfg = tiny(n_actions=20)
    torch.manual_seed(0)
    ac = ActorCritic(cfg, separate_critic=True).train()
    inp = make_inputs(cfg, episode_steps(6))
    dist, value = ac(inp)
    value.sum().backward()
    assert not _grads(ac.actor), "value loss reached the actor copy"
    assert _grads(ac.critic)
    ac.zero_grad(set_to_none=True)
    dist, value = ac(inp)
    dist.log_prob(torch.zeros_like(inp.step)).sum().backward()
    assert not _grads(ac.critic), "policy loss reached the critic copy"
    assert _grads(ac.actor.decoder)
    # control: with a shared trunk the value loss does reach the decoder
    shared = ActorCritic(cfg, separate_critic=False)
    shared(inp)[1].sum().backward()
    assert _grads(shared.actor.decoder)


@pytest.mark.parametrize("pos", [False, True])
def test_visual_tokens_know_their_position_only_with_position_embeddings(pos):
    """Two objects swapped between two interior cells give the same bag of CNN tokens: without position
    embeddings the fused observation cannot tell them apart (left from right); with them it must."""
    torch.manual_seed(0)
    # a 10x10 token grid, so that both cells and every token that sees them (3x3 conv) stay off the border
    cfg = tiny(visual_pos_embed=pos, image_size=(80, 80), visual_grid=(10, 10))
    enc = PolicyNet(cfg).eval().visual_encoder
    if pos:  # as after training: embeddings of the tokens' scale (they start at 0.02 to leave the CNN in charge)
        nn.init.normal_(getattr(enc, f"visual_pos_embed_{cfg.cameras[0]}"))
    p = cfg.cnn_patch
    red, blue = (slice(2 * p, 3 * p), slice(2 * p, 3 * p)), (slice(2 * p, 3 * p), slice(7 * p, 8 * p))
    frame = torch.zeros(1, 80, 80, 3, dtype=torch.uint8)
    frame[0, red[0], red[1], 0] = 255
    frame[0, blue[0], blue[1], 2] = 255
    swapped = torch.zeros_like(frame)
    swapped[0, red[0], red[1], 2] = 255
    swapped[0, blue[0], blue[1], 0] = 255
    text, mask = torch.randn(1, 4, cfg.text_dim), torch.ones(1, 4, dtype=torch.bool)
    cam = cfg.cameras[0]
    with torch.no_grad():
        a = enc({cam: frame}, text, mask, torch.zeros(1, dtype=torch.long))
        b = enc({cam: swapped}, text, mask, torch.zeros(1, dtype=torch.long))
    diff = (a - b).abs().max().item()
    if pos:
        assert diff > 1e-4, f"position embeddings did not make the swap visible ({diff})"
    else:
        assert diff < 1e-6, f"expected a permutation-invariant bag of tokens, got a difference of {diff}"


def test_goal_film_starts_as_identity_and_trains():
    """FiLM of the visual tokens by the goal is zero-initialised: a fresh model computes exactly what the same
    weights without FiLM compute, and the FiLM layer receives gradient from the first step."""
    torch.manual_seed(0)
    film = PolicyNet(tiny(visual_goal_film=True)).eval()
    plain = PolicyNet(tiny(visual_goal_film=False)).eval()
    plain.load_state_dict({k: v for k, v in film.state_dict().items() if "goal_film" not in k})
    inp = make_inputs(film.cfg, episode_steps(12)[:, :12])
    torch.testing.assert_close(film(inp)[0], plain(inp)[0], rtol=0, atol=1e-6)
    film(inp)[0].logsumexp(-1).sum().backward()
    assert film.visual_encoder.goal_film.weight.grad.abs().sum() > 0


def test_cnn_pixel_norm_standardises_frames_and_kaiming_init_keeps_units_alive():
    """cnn_pixel_norm: the CNN sees (pixel/255 - mean) / std; cnn_kaiming_init: zero biases, and on frames a
    default-initialised CNN leaves mostly dark, far fewer units are off on every frame."""
    torch.manual_seed(0)
    fixed = PolicyNet(tiny(cnn_pixel_norm=(0.2, 0.25), cnn_kaiming_init=True)).visual_encoder
    frames = torch.zeros(16, 56, 56, 3, dtype=torch.uint8)
    frames[:, 8:48:8] = torch.randint(0, 255, (16, 5, 56, 3), dtype=torch.uint8)  # sparse bright rows
    tokens = fixed.camera_tokens("raw_navigation_camera", frames)
    x = (frames.permute(0, 3, 1, 2).float() / 255.0 - 0.2) / 0.25
    h = fixed.visual_compressor(fixed.visual_backbone(x))
    want = fixed.visual_adapter(h.flatten(2).transpose(1, 2)) + fixed.visual_sensor_token_raw_navigation_camera
    torch.testing.assert_close(tokens, want)
    assert all((m.bias == 0).all() for m in [*fixed.visual_backbone, *fixed.visual_compressor]
               if isinstance(m, nn.Conv2d))

    def dead(enc, frames, norm):
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        if norm:
            x = (x - 0.2) / 0.25
        h = enc.visual_compressor(enc.visual_backbone(x))
        return (h.amax((0, 2, 3)) <= 0).float().mean().item()

    torch.manual_seed(0)
    default = PolicyNet(tiny()).visual_encoder
    assert dead(fixed, frames, True) < dead(default, frames, False)
    with pytest.raises(ValueError, match="cnn_pixel_norm"):
        tiny(cnn_pixel_norm=(0.2,))
    with pytest.raises(ValueError, match="cnn_pixel_norm"):
        tiny(cnn_pixel_norm=(0.2, 0.0))


def test_flat_readout_keeps_where_the_object_is():
    """Without position embeddings the fusion CLS is blind to where a token sits: the same object in two interior
    cells of an empty frame gives the same output. visual_flat_readout adds the grid in order, so it is not."""
    frames = torch.zeros(2, 56, 56, 3, dtype=torch.uint8)
    frames[0, 16:24, 16:24] = torch.tensor([255, 0, 0], dtype=torch.uint8)  # cell (2, 2)
    frames[1, 32:40, 32:40] = torch.tensor([255, 0, 0], dtype=torch.uint8)  # cell (4, 4)
    text, mask, goal = torch.randn(1, 3, 384), torch.ones(1, 3, dtype=torch.bool), torch.zeros(2, dtype=torch.long)
    outs = {}
    for k in (0, 8):
        torch.manual_seed(0)
        enc = PolicyNet(tiny(visual_flat_readout=k, cnn_kaiming_init=True)).visual_encoder.eval()
        with torch.no_grad():
            outs[k] = enc({"raw_navigation_camera": frames}, text, mask, goal)
    torch.testing.assert_close(outs[0][0], outs[0][1], rtol=1e-5, atol=1e-5)
    assert (outs[8][0] - outs[8][1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="visual_flat_readout"):
        tiny(visual_flat_readout=-1)
