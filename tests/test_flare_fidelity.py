"""Bundles converted from FLaRe checkpoints run as FLaRe ran them: the crop-and-stretch its augmentation
applied to every frame, sampled actions, its training context. Sim bundles are unaffected."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from flare_policy.bundle import FLARE_AUGMENT_CROP, BundleError, CameraSpec, flare_camera, sim_camera
from flare_policy.node_params import DEFAULT_KV_WINDOW, ConfigError, inference_settings
from flare_policy.preprocess import prepare_frame

H, W = 224, 384  # FLaRe's frame after the simulator's 6-px side crop
RATIO = (3 / 4, 4 / 3)  # torchvision RandomResizedCrop's default ratio, which FLaRe keeps


def _rrc_params(height, width, scale, ratio, draws):
    """torchvision.transforms.RandomResizedCrop.get_params, written from its documented algorithm: up to 10
    draws of (area fraction, log-uniform aspect); the first crop that fits wins, else the centre fallback.
    `draws` supplies the random numbers, so every possible draw can be tried."""
    area = height * width
    for u_scale, u_ratio in draws[:10]:
        target = area * (scale[0] + u_scale * (scale[1] - scale[0]))
        aspect = math.exp(math.log(ratio[0]) + u_ratio * (math.log(ratio[1]) - math.log(ratio[0])))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return "fit", (h, w)
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return "fallback", ((height - h) // 2, (width - w) // 2, h, w)


@pytest.mark.parametrize("s", np.linspace(0.9, 1.0, 11))
def test_flare_random_resized_crop_always_falls_back_to_the_centre_224x299(s):
    rng = np.random.default_rng(int(s * 1000))
    grid = [(a, b) for a in (0.0, 0.5, 1.0) for b in (0.0, 0.5, 1.0)]  # the extremes of both draws
    for draws in [grid[:10], list(rng.random((10, 2)))]:
        kind, params = _rrc_params(H, W, (s, s), RATIO, draws)
        assert kind == "fallback" and params == (0, 42, 224, 299), (s, kind, params)
    # why: the smallest crop height any draw can ask for is still taller than the frame
    assert math.sqrt(s * H * W * RATIO[0]) > H
    assert FLARE_AUGMENT_CROP == (224, 299)


def test_against_torchvision_when_it_is_installed():
    tv = pytest.importorskip("torchvision.transforms", reason="torchvision is not a dependency")
    import torch

    img = torch.zeros(3, H, W, dtype=torch.uint8)
    for seed, s in enumerate(np.linspace(0.9, 1.0, 6)):
        torch.manual_seed(seed)
        assert tv.RandomResizedCrop.get_params(img, scale=(s, s), ratio=RATIO) == (0, 42, 224, 299)


def _ramp(h, w):
    """Frame whose red channel encodes the column (scaled to 0..255), green the row."""
    cols = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    rows = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    return np.stack([cols, rows, np.full((h, w), 128)], -1).astype(np.uint8)


def test_converted_bundle_frames_are_centre_cropped_and_stretched_as_flare_saw_them():
    spec = flare_camera("raw_navigation_camera")
    assert spec.stretch_crop == (224, 299)
    img = _ramp(H, W)
    out = prepare_frame(img, spec)
    ref = np.asarray(Image.fromarray(np.ascontiguousarray(img[:, 42:42 + 299])).resize((W, H), Image.BILINEAR))
    assert out.shape == (H, W, 3) and np.array_equal(out, ref)
    # the left edge now shows column 42 of the frame, the right edge column 340: 78% of the width, 1.28x wider
    col = img[0, :, 0].astype(float)
    assert abs(float(out[0, 0, 0]) - col[42]) <= 1.5 and abs(float(out[0, -1, 0]) - col[340]) <= 1.5
    assert np.array_equal(out[:, :, 1], img[:, :, 1])  # rows untouched
    # a camera frame (16:9) takes the same path after FLaRe's 396x224 resize and 6-px crop
    cam = _ramp(720, 1280)
    plain = prepare_frame(cam, flare_camera("raw_navigation_camera", augment_crop=False))
    assert np.array_equal(prepare_frame(cam, spec), prepare_frame(plain, spec))


def test_sim_bundles_and_specs_without_stretch_crop_are_unchanged():
    img = _ramp(56, 56)
    assert np.array_equal(prepare_frame(img, sim_camera()), img)
    assert "stretch_crop" not in sim_camera().to_dict()
    spec = flare_camera("raw_manipulation_camera")
    assert CameraSpec.from_dict(spec.to_dict()) == spec
    for bad in ([224, 400], [0, 299], [224], "wide"):
        with pytest.raises(BundleError, match="stretch_crop|bad camera entry"):
            CameraSpec.from_dict(dict(spec.to_dict(), stretch_crop=bad))


def test_action_selection_and_context_follow_the_bundle_unless_overridden():
    flare = {"inference": {"action_selection": "sample", "kv_window": 128}}
    assert inference_settings(flare, "bundle", 0) == ("sample", 128)
    assert inference_settings(flare, "greedy", 0) == ("greedy", 128)
    assert inference_settings(flare, "bundle", 500) == ("sample", 500)
    assert inference_settings({}, "bundle", 0) == ("greedy", DEFAULT_KV_WINDOW)  # sim / BC bundles
    assert inference_settings({}, "sample", 64) == ("sample", 64)
    with pytest.raises(ConfigError, match="action_selection 'argmax'"):
        inference_settings({"inference": {"action_selection": "argmax"}}, "bundle", 0)
    with pytest.raises(ConfigError, match="kv_window -1"):
        inference_settings({"inference": {"kv_window": -1}}, "bundle", 0)
