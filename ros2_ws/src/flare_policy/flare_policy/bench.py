"""Benchmarks (scripts, not tests): `flare-policy bench kv` and `flare-policy bench step`.

Register more in BENCHES (name -> (main(argv) -> int, help)); the CLI dispatches by name, and also reads
`flare_policy.bench_ros.BENCHES` when that module exists.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _set_threads(n: int) -> None:
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process
        pass


def _pct(xs, q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


# ----------------------------------------------------------------------------------------------------------
# compute floors: what the arithmetic alone costs on this CPU (a lower bound on any implementation's time)


def count_flops(fn) -> dict[str, float]:
    """FLOPs of fn() by aten op name (torch's FlopCounterMode; attention runs through the math kernel so that its
    two matmuls are counted). Multiply-add = 2 FLOPs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        fn()
    return {str(k).removeprefix("aten."): float(v) for k, v in fc.get_flop_counts()["Global"].items()}


def mlp_rate(threads: int, rows: int, dim: int, hidden: int, int8: bool = False, repeats: int = 10) -> float:
    """Best measured FLOP/s (int8: OP/s) of a Linear(dim, hidden) -> Linear(hidden, dim) pair on `rows` tokens:
    well-shaped GEMMs, the fastest this CPU does the bulk of a transformer's arithmetic."""
    from .vision import quantize_linear

    _set_threads(threads)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.Linear(hidden, dim)).eval()
    if int8:
        mlp = quantize_linear(mlp)
    x = torch.randn(rows, dim)
    best = float("inf")
    with torch.inference_mode():
        mlp(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            mlp(x)
            best = min(best, time.perf_counter() - t0)
    return 4.0 * rows * dim * hidden / best


def step_floor(vision, model, text_model, text_tokens, frame, threads: int, quantize_vision: bool) -> dict:
    """Arithmetic floor of one flare_small3 step on this CPU: counted FLOPs / measured best GEMM rates.
    DINOv2's linear layers at the int8 rate when quantized, everything else at the fp32 rate; the faithful
    path adds the T5 pass and runs all in fp32. Elementwise work (GELU, LayerNorm, softmax) is not counted."""
    from .model import PolicyInput

    cams = model.cfg.cameras
    x = torch.from_numpy(frame)[None]
    vit = count_flops(lambda: vision(x))
    vit_linear, vit_total = vit.get("addmm", 0.0), sum(vit.values())
    feats = {c: vision(x)[:, None] for c in cams}
    one = lambda v: torch.tensor([[v]])  # noqa: E731
    text = torch.zeros(1, 8, model.cfg.text_dim)
    inp = PolicyInput(feats, text, torch.ones(1, 8, dtype=torch.bool), one(0), one(0), one(0), one(0))
    cache = model.new_cache(1, 8)
    with torch.inference_mode():
        policy = sum(count_flops(lambda: model(inp, cache=cache)).values())
        t5 = sum(count_flops(lambda: text_model(**text_tokens)).values())
    fp32 = mlp_rate(threads, 433, 384, 1536)  # DINOv2-S MLP shapes (433 tokens)
    int8 = mlp_rate(threads, 433, 384, 1536, int8=True)
    vision_s = len(cams) * ((vit_linear / int8 + (vit_total - vit_linear) / fp32) if quantize_vision
                            else vit_total / fp32)
    return {"floor_ms": (vision_s + policy / fp32) * 1e3,
            "faithful_floor_ms": (len(cams) * vit_total + policy + t5) / fp32 * 1e3,
            "gflop_vision_per_camera": vit_total / 1e9, "gflop_vision_linear_per_camera": vit_linear / 1e9,
            "gflop_policy": policy / 1e9, "gflop_text": t5 / 1e9,
            "gemm_fp32_gflops": fp32 / 1e9, "gemm_int8_gops": int8 / 1e9}


# ----------------------------------------------------------------------------------------------------------
# bench kv: cached decoder step vs full recompute


def bench_kv(ts=(1, 100, 250, 500, 1000), threads: int = 1, window: int = 1024, repeats: int = 5,
             full_repeats: int = 3, seed: int = 0) -> dict:
    """Per-step latency of flare_small3's decoder (d 512, 3 layers, 8 heads, SwiGLU 1536) at episode step t.

    cached: one cached step at position t (median over `repeats` runs of a whole episode and the steps t-2..t+2,
    which cost the same); full: the whole (1, t) sequence through the decoder with the episode mask, last step
    kept. max_abs_diff compares the two outputs at every t."""
    from .model import flare_small3
    from .model.decoder import TransformerDecoder, episode_window_mask

    _set_threads(threads)
    cfg = flare_small3()
    torch.manual_seed(seed)
    dec = TransformerDecoder(cfg.d_model, cfg.decoder_layers, cfg.decoder_heads, cfg.decoder_ff, cfg.norm_eps).eval()
    T = max(ts)
    window = max(window, T)
    x = torch.randn(1, T, cfg.d_model)
    per_step = torch.zeros(repeats, T)
    cached_out = torch.zeros(T, cfg.d_model)
    with torch.inference_mode():
        for r in range(repeats):
            cache = dec.new_cache(1, window)
            for i in range(T):
                t0 = time.perf_counter()
                y = dec(x[:, i: i + 1], cache=cache)
                per_step[r, i] = time.perf_counter() - t0
                cached_out[i] = y[0, 0]
        cached_ms, full_ms, max_diff = [], [], 0.0
        for t in ts:
            lo, hi = max(0, t - 3), min(T, t + 2)  # steps t-2..t+2 (1-based t)
            cached_ms.append(per_step[:, lo:hi].median().item() * 1e3)
            step = torch.arange(t)[None]
            mask = episode_window_mask(step, window)
            times = []
            for _ in range(full_repeats):
                t0 = time.perf_counter()
                full = dec(x[:, :t], mask=mask)[0, -1]
                times.append(time.perf_counter() - t0)
            full_ms.append(statistics.median(times) * 1e3)
            max_diff = max(max_diff, (full - cached_out[t - 1]).abs().max().item())
    return {"t": list(ts), "cached_ms": cached_ms, "full_ms": full_ms, "max_abs_diff": max_diff,
            "threads": threads, "window": window}


def kv_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="flare-policy bench kv", description="Decoder step latency: KV-cache vs "
                                "full recompute (flare_small3 decoder shapes). Targets: cached(500) <= 1.3 x "
                                "cached(1); full(500)/cached(500) >= 30; max abs diff <= 1e-5.")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--window", type=int, default=1024, help="KV window (>= the largest t)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    a = p.parse_args(argv)
    r = bench_kv(threads=a.threads, window=a.window, repeats=a.repeats)
    print(f"decoder d512 x3 layers x8 heads, window {r['window']}, {r['threads']} thread(s)")
    print(f"{'t':>6} {'cached ms':>10} {'full ms':>10} {'speed-up':>9}")
    for t, c, f in zip(r["t"], r["cached_ms"], r["full_ms"]):
        print(f"{t:>6} {c:>10.3f} {f:>10.2f} {f / c:>8.1f}x")
    i1, i500 = r["t"].index(1), r["t"].index(500)
    ratio, speed = r["cached_ms"][i500] / r["cached_ms"][i1], r["full_ms"][i500] / r["cached_ms"][i500]
    ok = ratio <= 1.3 and speed >= 30 and r["max_abs_diff"] <= 1e-5
    print(f"cached(500)/cached(1) = {ratio:.2f} (target <= 1.3); full/cached at 500 = {speed:.0f}x (>= 30); "
          f"max abs diff {r['max_abs_diff']:.2e} (<= 1e-5): {'PASS' if ok else 'MISS'}")
    if a.json:
        print(json.dumps(r))
    return 0


# ----------------------------------------------------------------------------------------------------------
# bench step: a full deployment step of flare_small3


GOAL = "find a mug in the kitchen"


class FaithfulStep:
    """FLaRe's path: fp32, each camera through DINOv2 separately, the goal re-tokenised and re-encoded by T5
    on every step (no text cache), one decoder step through the KV-cache."""

    def __init__(self, model, dinov2_dir, t5_dir):
        from transformers import AutoTokenizer, T5EncoderModel

        from .vision import Dinov2Features

        self.model, self.vision = model, Dinov2Features(dinov2_dir)
        self.tok = AutoTokenizer.from_pretrained(str(t5_dir), local_files_only=True)
        self.t5 = T5EncoderModel.from_pretrained(str(t5_dir), local_files_only=True).eval()
        self.cache = model.new_cache(1, 1000)

    @torch.inference_mode()
    def act(self, frames, goal, prev, in_hand, step, mask) -> torch.Tensor:
        from .model import PolicyInput

        feats = {k: self.vision(torch.from_numpy(v)[None])[:, None] for k, v in frames.items()}
        tok = self.tok(goal, return_tensors="pt")
        text = self.t5(**tok).last_hidden_state  # (1, L, 512)
        one = lambda x: torch.tensor([[x]])  # noqa: E731
        inp = PolicyInput(feats, text, tok["attention_mask"].bool(), one(0), one(prev), one(int(in_hand)), one(step))
        logits, _, _ = self.model(inp, cache=self.cache, action_mask=mask)
        return logits[0, 0]


def _fixture(seed: int, dinov2_dir=None, t5_dir=None):
    """Random-weight flare_small3 + ViT-S/14 + T5-small in a temp dir; frames of a slowly drifting scene."""
    import numpy as np

    from .convert import random_t5
    from .model import PolicyNet, flare_small3
    from .vision import random_dinov2

    tmp = Path(tempfile.mkdtemp(prefix="flare-bench-"))
    dinov2_dir = Path(dinov2_dir) if dinov2_dir else random_dinov2(tmp / "dinov2", seed=seed)
    if not t5_dir:
        t5_dir = tmp / "t5"
        random_t5(t5_dir, seed=seed)
    cfg = flare_small3()
    torch.manual_seed(seed)
    model = PolicyNet(cfg).eval()
    rng = np.random.default_rng(seed)
    base = {c: rng.integers(0, 256, (224, 384, 3), dtype=np.uint8) for c in cfg.cameras}

    def frames(i):  # the view shifts 3 px per step, plus sensor noise
        out = {}
        for c, img in base.items():
            f = np.roll(img, shift=(i * 3) % 384, axis=1).astype(np.int16)
            out[c] = np.clip(f + rng.integers(-8, 9, f.shape), 0, 255).astype(np.uint8)
        return out

    return tmp, Path(dinov2_dir), Path(t5_dir), model, frames


def bench_step(steps: int = 60, threads: int = 1, quantize_vision: bool = True, quantize_policy: bool = False,
               channels_last: bool = False, compile_vision: bool = False, dinov2_dir=None, t5_dir=None,
               seed: int = 0, warmup: int = 3, logit_std: float = 3.0, with_floor: bool = True) -> dict:
    """p50/p99 of PolicyRunner.act (frames -> action, text cached) for flare_small3 with random weights, against
    the FLaRe-faithful path on the same frames and history (both follow the faithful greedy action); plus the
    arithmetic floor of both paths on this CPU (step_floor)."""
    from .bundle import flare_camera, load_bundle, save_bundle
    from .runner import PolicyRunner
    from .text import TextEncoder
    from .vision import Dinov2Features, quantize_linear

    _set_threads(threads)
    tmp, dinov2_dir, t5_dir, model, frames = _fixture(seed, dinov2_dir, t5_dir)
    faithful = FaithfulStep(model, dinov2_dir, t5_dir)
    mask = torch.ones(model.cfg.n_actions, dtype=torch.bool)

    # Random weights + FLaRe's actor init (gain 0.01) make every greedy action a near-tie; give the head
    # random N(0, 1) rows rescaled so logits spread with std ~logit_std (measured on 3 calibration steps),
    # otherwise "agreement" would only measure noise.
    with torch.no_grad():
        model.actor.linear.weight.normal_()
        cal = [faithful.act(frames(i), GOAL, model.cfg.n_actions if i == 0 else 0, False, i, mask) for i in range(3)]
        model.actor.linear.weight.mul_(logit_std / torch.stack(cal).std(-1).mean().item())

    save_bundle(tmp / "bundle", model, embodiment="stretch", cameras=[flare_camera(c) for c in model.cfg.cameras],
                text_encoder={"kind": "t5", "path": str(t5_dir)},
                vision_encoder={"kind": "dinov2", "path": str(dinov2_dir)})
    vision = Dinov2Features(dinov2_dir, quantize=quantize_vision, channels_last=channels_last)
    if compile_vision:
        vision.vit.encoder = torch.compile(vision.vit.encoder)
    runner = PolicyRunner(load_bundle(tmp / "bundle"), text_encoder=TextEncoder("t5", t5_dir), vision=vision)
    mask = runner.mask
    if quantize_policy:  # int8 linears in the fusion encoder and decoder; the heads stay fp32
        runner.model.visual_encoder = quantize_linear(runner.model.visual_encoder)
        runner.model.decoder = quantize_linear(runner.model.decoder)

    opt_ms, ref_ms, agree, margins, max_dp = [], [], [], [], 0.0
    for n, measured in ((warmup, False), (steps, True)):
        runner.start_episode(GOAL)
        faithful.cache.reset()
        prev = model.cfg.n_actions
        for i in range(n):
            fr, in_hand = frames(i), i % 7 == 3
            t0 = time.perf_counter()
            d = runner.act(fr, in_hand)
            t1 = time.perf_counter()
            logits = faithful.act(fr, GOAL, prev, in_hand, i, mask)
            t2 = time.perf_counter()
            probs = torch.softmax(logits, -1)
            ref = int(torch.argmax(probs))
            runner.prev_action = prev = ref  # teacher-force both paths on the faithful trajectory
            if measured:
                opt_ms.append((t1 - t0) * 1e3)
                ref_ms.append((t2 - t1) * 1e3)
                agree.append(d.index == ref)
                top2 = torch.topk(probs, 2).values
                margins.append(float(top2[0] - top2[1]))
                max_dp = max(max_dp, (torch.tensor(d.probs) - probs).abs().max().item())
    floor = step_floor(faithful.vision, model, faithful.t5, faithful.tok(GOAL, return_tensors="pt"),
                       next(iter(frames(0).values())), threads, quantize_vision) if with_floor else {}
    return {**floor, "p50_ms": statistics.median(opt_ms), "p99_ms": _pct(opt_ms, 99),
            "faithful_p50_ms": statistics.median(ref_ms), "faithful_p99_ms": _pct(ref_ms, 99),
            "speedup": statistics.median(ref_ms) / statistics.median(opt_ms),
            "action_agreement": sum(agree) / len(agree), "max_abs_prob_diff": max_dp,
            "median_top2_prob_margin": statistics.median(margins), "steps": len(opt_ms), "threads": threads,
            "quantize_vision": quantize_vision, "quantize_policy": quantize_policy, "channels_last": channels_last,
            "compile_vision": compile_vision}


def _median_ms(fn, n: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bench_ablate(threads_list=(1, 2), seed: int = 0, dinov2_dir=None, t5_dir=None, repeats: int = 5,
                 try_compile: bool = True) -> list[dict]:
    """What each optimisation gives, part by part: DINOv2 on the two cameras, the policy step, the text."""
    from .model import PolicyInput
    from .text import TextEncoder
    from .vision import Dinov2Features, quantize_linear

    tmp, dinov2_dir, t5_dir, model, frames = _fixture(seed, dinov2_dir, t5_dir)
    fr = {k: torch.from_numpy(v)[None] for k, v in frames(0).items()}
    both = torch.cat(list(fr.values()))
    rows = []
    fp32 = Dinov2Features(dinov2_dir)
    ref = fp32(both)
    variants = {"fp32": fp32, "fp32 channels_last": Dinov2Features(dinov2_dir, channels_last=True),
                "int8": Dinov2Features(dinov2_dir, quantize=True)}
    if try_compile:
        try:
            comp = Dinov2Features(dinov2_dir)
            comp.vit.encoder = torch.compile(comp.vit.encoder)  # the ViT blocks (the HF wrapper does not trace)
            comp(both)
            variants["fp32 torch.compile"] = comp
        except Exception as e:  # noqa: BLE001 - report whatever the compiler stack says
            rows.append({"part": "dinov2 x2", "variant": "fp32 torch.compile",
                         "error": f"{type(e).__name__}: {e}"[:200]})
    for th in threads_list:
        _set_threads(th)
        for name, v in variants.items():
            cos = torch.nn.functional.cosine_similarity(v(both).flatten(1), ref.flatten(1)).min().item()
            rows.append({"part": "dinov2 x2", "variant": f"{name}, per camera", "threads": th,
                         "ms": _median_ms(lambda: [v(x) for x in fr.values()], repeats), "min_cosine_vs_fp32": cos})
            rows.append({"part": "dinov2 x2", "variant": f"{name}, batched", "threads": th,
                         "ms": _median_ms(lambda: v(both), repeats)})
    # policy step with features given and text cached (encoder over 169 + L tokens, one decoder step)
    text = TextEncoder("t5", t5_dir)
    t, tm = text.encode_batch([GOAL])
    feats = {k: f[None, None] for k, f in zip(fr, ref)}
    one = lambda x: torch.tensor([[x]])  # noqa: E731
    inp = PolicyInput(feats, t, tm, one(0), one(3), one(0), one(5))
    qmodel = type(model)(model.cfg).eval()
    qmodel.load_state_dict(model.state_dict())
    qmodel.visual_encoder = quantize_linear(qmodel.visual_encoder)
    qmodel.decoder = quantize_linear(qmodel.decoder)
    for th in threads_list:
        _set_threads(th)
        for name, m in (("fp32", model), ("int8 fusion+decoder", qmodel)):
            cache = m.new_cache(1, 1000)
            with torch.inference_mode():
                rows.append({"part": "policy step", "variant": name, "threads": th,
                             "ms": _median_ms(lambda: m(inp, cache=cache), repeats)})
        text._cache.clear()
        rows.append({"part": "text", "variant": "T5 re-encoded (faithful)", "threads": th,
                     "ms": _median_ms(lambda: (text._cache.clear(), text.encode(GOAL)), repeats)})
        rows.append({"part": "text", "variant": "cached", "threads": th,
                     "ms": _median_ms(lambda: text.encode(GOAL), repeats)})
    return rows


def step_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="flare-policy bench step", description="Full deployment step of flare_small3 "
                                "(two 224x384 cameras, random DINOv2-S/14 and T5-small weights, text cached) vs the "
                                "FLaRe-faithful path (fp32, cameras separately, text re-encoded every step). "
                                "Targets: p50 <= 250 ms, >= 2x faster than faithful, same greedy action >= 99%%. "
                                "Also prints each path's arithmetic floor on this CPU: counted FLOPs over the best "
                                "measured GEMM rate (fp32, and int8 for the quantized DINOv2 linears).")
    p.add_argument("--steps", type=int, default=60, help="measured steps (default 60)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both paths (default 1: with anything "
                   "else busy on a 2-core machine, 2 OpenMP threads are several times slower)")
    p.add_argument("--fp32-vision", action="store_true", help="no int8 quantization of DINOv2")
    p.add_argument("--int8-policy", action="store_true", help="also quantize the fusion encoder and decoder")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the ViT")
    p.add_argument("--dinov2", metavar="DIR", help="a local DINOv2 instead of random ViT-S/14 weights")
    p.add_argument("--ablate", action="store_true", help="also time each optimisation separately")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    a = p.parse_args(argv)
    if a.ablate:
        print(f"{'part':<12} {'variant':<34} {'thr':>3} {'ms':>8}  note")
        for r in bench_ablate(threads_list=sorted({1, a.threads}), dinov2_dir=a.dinov2):
            note = r.get("error") or (f"min cosine vs fp32 {r['min_cosine_vs_fp32']:.5f}"
                                      if "min_cosine_vs_fp32" in r else "")
            ms = f"{r['ms']:8.1f}" if "ms" in r else "       -"
            print(f"{r['part']:<12} {r['variant']:<34} {r.get('threads', '-'):>3} {ms}  {note}")
    r = bench_step(steps=a.steps, threads=a.threads, quantize_vision=not a.fp32_vision, quantize_policy=a.int8_policy,
                   channels_last=a.channels_last, compile_vision=a.compile, dinov2_dir=a.dinov2)
    ok = r["p50_ms"] <= 250 and r["speedup"] >= 2 and r["action_agreement"] >= 0.99
    print(f"optimised  p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  ({r['steps']} steps, "
          f"{r['threads']} threads, "
          f"int8 vision {r['quantize_vision']}, int8 policy {r['quantize_policy']})")
    print(f"faithful   p50 {r['faithful_p50_ms']:.1f} ms  p99 {r['faithful_p99_ms']:.1f} ms")
    print(f"arithmetic floor on this CPU ({r['threads']} threads): optimised {r['floor_ms']:.0f} ms, faithful "
          f"{r['faithful_floor_ms']:.0f} ms (DINOv2 {r['gflop_vision_per_camera']:.1f} GFLOP per camera, "
          f"{r['gflop_vision_linear_per_camera']:.1f} of it linear; policy {r['gflop_policy']:.2f} GFLOP; T5 "
          f"{r['gflop_text']:.2f} GFLOP; best GEMM {r['gemm_fp32_gflops']:.0f} GFLOP/s fp32, "
          f"{r['gemm_int8_gops']:.0f} GOP/s int8)")
    print(f"speed-up {r['speedup']:.2f}x, greedy action agreement {r['action_agreement']:.1%} (median top-2 prob "
          f"margin {r['median_top2_prob_margin']:.3f}, max |dprob| {r['max_abs_prob_diff']:.4f}): "
          f"{'PASS' if ok else 'MISS'} (p50 <= 250 ms, >= 2x, >= 99%)")
    if a.json:
        print(json.dumps(r))
    return 0


BENCHES = {
    "kv": (kv_main, "decoder step latency, KV-cache vs full recompute"),
    "step": (step_main, "full deployment step vs the FLaRe-faithful path"),
}
