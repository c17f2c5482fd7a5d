"""Camera frame -> policy input, identical on the robot and in training (numpy only).

FLaRe: a 16:9 frame is brought to 396x224 and cropped 6 px per side to 224x384 (H x W). Frames of another
aspect are first center-cropped to the target aspect so objects keep their shape; frames already at the
target size (the simulator's) are not resized. Bundles converted from FLaRe checkpoints then apply FLaRe's
deterministic crop-and-stretch (CameraSpec.stretch_crop): the central 224x299 window resized back to 224x384.
"""
from __future__ import annotations

import numpy as np

from .bundle import CameraSpec

ENCODINGS = ("rgb8", "bgr8")


class FrameError(ValueError):
    """A frame the policy must not act on (wrong encoding, size, truncated data, non-finite)."""


def image_to_array(encoding: str, height: int, width: int, step: int, data: bytes | memoryview) -> np.ndarray:
    """sensor_msgs/Image fields -> (H, W, 3) uint8 RGB, validating everything."""
    if encoding not in ENCODINGS:
        raise FrameError(f"unsupported image encoding {encoding!r} (expected one of {ENCODINGS})")
    if not (0 < height <= 8192 and 0 < width <= 8192):
        raise FrameError(f"implausible image size {width}x{height}")
    if step < width * 3:
        raise FrameError(f"row step {step} is smaller than width*3 = {width * 3}")
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size != step * height:
        raise FrameError(f"image data has {buf.size} bytes, expected step*height = {step * height} (truncated?)")
    img = buf.reshape(height, step)[:, : width * 3].reshape(height, width, 3)
    if encoding == "bgr8":
        img = img[..., ::-1]
    return np.ascontiguousarray(img)


def rotate(img: np.ndarray, degrees: int) -> np.ndarray:
    """Rotate counter-clockwise by a multiple of 90 degrees (Stretch's head camera is mounted sideways)."""
    if degrees % 90:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {degrees}")
    k = (degrees // 90) % 4
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


def _center_crop(img: np.ndarray, h: int, w: int) -> np.ndarray:
    H, W = img.shape[:2]
    top, left = (H - h) // 2, (W - w) // 2
    return img[top: top + h, left: left + w]


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR, reducing_gap=None))


def prepare_frame(img: np.ndarray, spec: CameraSpec, rotate_deg: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (crop_h, crop_w, 3) uint8, the exact input the policy saw in training."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise FrameError(f"expected an (H, W, 3) uint8 frame, got {img.dtype} {img.shape}")
    img = rotate(img, rotate_deg)
    rh, rw = spec.resize
    H, W = img.shape[:2]
    if (H, W) != tuple(spec.crop):  # else already cropped (FLaRe's simulator renders 224x384 after its crop)
        if (H, W) != (rh, rw):
            # crop to the target aspect ratio, then resize
            if W * rh > H * rw:
                img = _center_crop(img, H, max(1, round(H * rw / rh)))
            elif W * rh < H * rw:
                img = _center_crop(img, max(1, round(W * rh / rw)), W)
            img = _resize(np.ascontiguousarray(img), rh, rw)
        img = _center_crop(img, *spec.crop)
    if spec.stretch_crop is not None and tuple(spec.stretch_crop) != tuple(spec.crop):
        # what FLaRe's RandomResizedCrop fallback did to every frame (bundle.CameraSpec.stretch_crop)
        img = _resize(np.ascontiguousarray(_center_crop(img, *spec.stretch_crop)), *spec.crop)
    return np.ascontiguousarray(img)
