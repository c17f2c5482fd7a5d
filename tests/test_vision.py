"""FLaRe's image path: DINOv2 preprocessing, position-embedding rule, pooling; camera frame preprocessing."""
import math

import numpy as np
import pytest
import torch

from flare_policy.bundle import CameraSpec, flare_camera
from flare_policy.preprocess import FrameError, image_to_array, prepare_frame, rotate
from flare_policy.vision import (CLIP_MEAN, CLIP_STD, VITS14_CONFIG, Dinov2Features, VisionError, flare_pos_embed,
                                 random_dinov2, vision_provider_from_spec)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    # ViT-S/14's geometry (patch 14, 37x37 position grid) at a test width
    return random_dinov2(tmp_path_factory.mktemp("dinov2"), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, mlp_ratio=2)


@pytest.fixture(scope="module")
def frames():
    return torch.randint(0, 256, (2, 224, 384, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def bicubic_axis(x: torch.Tensor, axis: int, n_out: int, scale: float, A: float = -0.75) -> torch.Tensor:
    """Reference cubic-convolution resampling along one axis: output i samples src = (i + 0.5) / scale - 0.5
    (the source coordinate torch derives from a given scale factor), taps clamped at the border."""
    def k1(t):
        return ((A + 2) * t - (A + 3)) * t * t + 1

    def k2(t):
        return ((A * t - 5 * A) * t + 8 * A) * t - 4 * A

    x = x.movedim(axis, 0)
    M, out = x.shape[0], []
    for i in range(n_out):
        src = (i + 0.5) / scale - 0.5
        i0 = math.floor(src)
        t = src - i0
        w = (k2(t + 1), k1(t), k1(1 - t), k2(2 - t))
        out.append(sum(wk * x[min(max(i0 - 1 + k, 0), M - 1)] for k, wk in enumerate(w)))
    return torch.stack(out).movedim(0, axis)


def test_pos_embed_follows_dinov2_scale_factor_rule():
    g = torch.Generator().manual_seed(0)
    M, C = 37, 8
    pos = torch.randn(1, 1 + M * M, C, generator=g, dtype=torch.float64).float()
    out = flare_pos_embed(pos, (16, 27))
    assert out.shape == (1, 1 + 16 * 27, C) and torch.equal(out[:, 0], pos[:, 0])  # CLS untouched
    grid = pos[0, 1:].reshape(M, M, C).double()
    ref = bicubic_axis(bicubic_axis(grid, 0, 16, (16 + 0.1) / M), 1, 27, (27 + 0.1) / M)
    assert torch.allclose(out[0, 1:].reshape(16, 27, C).double(), ref, atol=1e-5)
    # HF's Dinov2 resizes to an output *size*: a different sampling grid, so FLaRe's rule must be applied
    size_rule = bicubic_axis(bicubic_axis(grid, 0, 16, 16 / M), 1, 27, 27 / M)
    assert (size_rule - ref).abs().max() > 1e-2


def test_dinov2_features_match_flare_preprocessing(dino_dir, frames):
    v = Dinov2Features(dino_dir)
    out = v(frames)
    assert out.shape == (2, 32, 7, 12) and out.dtype == torch.float32
    # reference, step by step from flare_checkpoint_spec.md section 5
    x = frames.permute(0, 3, 1, 2).double() / 255
    mean, std = (torch.tensor(c, dtype=torch.float64).view(1, 3, 1, 1) for c in (CLIP_MEAN, CLIP_STD))
    x = (x - mean) / std
    x = x[..., 3:381].float()  # 224 x 378
    vit = v.vit
    with torch.no_grad():
        emb = vit.embeddings.patch_embeddings(x)  # (2, 432, C), row-major patches
        emb = torch.cat([vit.embeddings.cls_token.expand(2, -1, -1), emb], 1)
        emb = emb + flare_pos_embed(vit.embeddings.position_embeddings, (16, 27))
        tokens = vit.layernorm(vit.encoder(emb).last_hidden_state)[:, 1:]  # x_norm_patchtokens
    fmap = tokens.transpose(1, 2).reshape(2, 32, 16, 27)
    rows = [(0, 3), (2, 5), (4, 7), (6, 10), (9, 12), (11, 14), (13, 16)]  # the spec's overlapping bins
    cols = [(0, 3), (2, 5), (4, 7), (6, 9), (9, 12), (11, 14), (13, 16), (15, 18), (18, 21), (20, 23), (22, 25),
            (24, 27)]
    ref = torch.stack([torch.stack([fmap[:, :, r0:r1, c0:c1].mean((2, 3)) for c0, c1 in cols], -1)
                       for r0, r1 in rows], -2)
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()
    # plain HF forward (its own position-embedding interpolation) gives different features
    with torch.no_grad():
        hf_tokens = type(vit).from_pretrained(str(dino_dir))(pixel_values=x).last_hidden_state[:, 1:]
    assert (hf_tokens - tokens).abs().max() > 1e-3


def test_dinov2_batching_quantization_and_errors(dino_dir, frames):
    v = Dinov2Features(dino_dir)
    both = v.encode_cameras({"nav": frames[:1], "manip": frames[1:]})
    assert torch.allclose(both["nav"], v(frames[:1]), atol=1e-5)
    assert torch.allclose(both["manip"], v(frames[1:]), atol=1e-5)
    q = Dinov2Features(dino_dir, quantize=True, channels_last=True)
    out, ref = q(frames), v(frames)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert torch.nn.functional.cosine_similarity(out.flatten(1), ref.flatten(1)).min() > 0.95
    with pytest.raises(VisionError, match=r"expected uint8 frames \(N, 224, 384, 3\), got torch.float32"):
        v(frames.float())
    with pytest.raises(VisionError, match=r"got torch.uint8 \(2, 224, 378, 3\)"):
        v(frames[:, :, :378])


def test_vision_provider_from_spec(dino_dir, tmp_path):
    assert isinstance(vision_provider_from_spec({"kind": "dinov2", "path": str(dino_dir)}), Dinov2Features)
    with pytest.raises(VisionError, match=f"DINOv2 directory {tmp_path / 'gone'} does not exist"):
        vision_provider_from_spec({"kind": "dinov2", "path": str(tmp_path / "gone")})
    with pytest.raises(VisionError, match="has no DINOv2 path"):
        vision_provider_from_spec({"kind": "dinov2", "path": None})
    with pytest.raises(VisionError, match="not a DINOv2 spec"):
        vision_provider_from_spec({"kind": "cnn"})
    with pytest.raises(VisionError, match="has no config.json"):
        vision_provider_from_spec({"kind": "dinov2", "path": str(tmp_path)})
    v = vision_provider_from_spec({"kind": "dinov2", "path": "/nowhere"}, override_path=dino_dir)
    assert v.path == str(dino_dir)


def test_random_dinov2_default_is_vit_s14():
    from transformers import Dinov2Config

    c = Dinov2Config(**VITS14_CONFIG)
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.patch_size) == (384, 12, 6, 14)
    assert (c.image_size // c.patch_size) ** 2 + 1 == 1370  # pos_embed (1, 1370, 384) of dinov2_vits14


# ---------------------------------------------------------------------------------------------------------
# camera frames -> policy input (flare_policy.preprocess)


def test_prepare_frame_geometry():
    spec = flare_camera("raw_navigation_camera", augment_crop=False)  # the stretch: test_flare_fidelity.py
    img = np.zeros((720, 1280, 3), np.uint8)
    img[:, 630:650] = 255  # a vertical bar at the centre
    img[:40] = (10, 20, 30)  # a top band
    out = prepare_frame(img, spec)
    assert out.shape == (224, 384, 3) and out.dtype == np.uint8
    bright = np.where(out[112, :, 0] > 128)[0]
    assert abs(bright.mean() - 191.5) < 1.5  # still centred after resize to 396 and the 6-px crop per side
    assert (out[5, 100] == (10, 20, 30)).all()
    assert prepare_frame(out, spec) is not None and np.array_equal(prepare_frame(np.ascontiguousarray(
        np.zeros((224, 396, 3), np.uint8)), spec), np.zeros((224, 384, 3), np.uint8))
    ready = np.random.default_rng(0).integers(0, 256, (224, 384, 3), dtype=np.uint8)
    assert np.array_equal(prepare_frame(ready, spec), ready)  # already 224x384 (FLaRe's sim): untouched
    four_three = prepare_frame(np.zeros((480, 640, 3), np.uint8), spec)  # other aspect: centre-cropped first
    assert four_three.shape == (224, 384, 3)
    sim = CameraSpec("raw_navigation_camera", (56, 56), (56, 56))
    small = np.arange(56 * 56 * 3, dtype=np.uint8).reshape(56, 56, 3)
    assert np.array_equal(prepare_frame(small, sim), small)  # already the right size: untouched


def test_rotation():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert np.array_equal(rotate(img, 90), np.rot90(img)) and np.array_equal(rotate(img, -90), np.rot90(img, 3))
    assert rotate(img, 0) is img and np.array_equal(rotate(img, 360), img)
    with pytest.raises(ValueError, match="multiple of 90"):
        rotate(img, 45)
    portrait = np.zeros((1280, 720, 3), np.uint8)  # Stretch's head camera is mounted sideways
    portrait[:40] = 255  # after a 90-degree clockwise turn (-90) the top band becomes the right edge
    out = prepare_frame(portrait, flare_camera("raw_navigation_camera", augment_crop=False),
                       rotate_deg=-90)
    assert out.shape == (224, 384, 3) and out[:, -1].min() == 255 and out[:, 0].max() == 0


def test_image_to_array_encodings_and_validation():
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    assert np.array_equal(image_to_array("rgb8", 4, 5, 15, rgb.tobytes()), rgb)
    assert np.array_equal(image_to_array("bgr8", 4, 5, 15, rgb[..., ::-1].tobytes()), rgb)
    padded = np.zeros((4, 16), np.uint8)  # rows padded to 16 bytes
    padded[:, :15] = rgb.reshape(4, 15)
    assert np.array_equal(image_to_array("rgb8", 4, 5, 16, padded.tobytes()), rgb)
    with pytest.raises(FrameError, match="truncated"):
        image_to_array("rgb8", 4, 5, 15, rgb.tobytes()[:-1])
    with pytest.raises(FrameError, match="unsupported image encoding 'mono8'"):
        image_to_array("mono8", 4, 5, 5, bytes(20))
    with pytest.raises(FrameError, match="unsupported image encoding 'rgba8'"):
        image_to_array("rgba8", 4, 5, 20, bytes(80))
    with pytest.raises(FrameError, match="row step 14 is smaller"):
        image_to_array("rgb8", 4, 5, 14, bytes(56))
    with pytest.raises(FrameError, match="implausible image size"):
        image_to_array("rgb8", 0, 5, 15, b"")
    with pytest.raises(FrameError, match="expected an \\(H, W, 3\\) uint8 frame"):
        prepare_frame(np.zeros((4, 5, 3), np.float32), flare_camera("raw_navigation_camera"))
