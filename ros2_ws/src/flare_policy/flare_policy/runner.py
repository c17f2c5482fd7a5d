"""ROS-free policy runner: one robot, one episode at a time, KV-cache kept across steps.

The rclpy node and the simulator demo both drive this class, so what runs on the robot is exactly what
is tested here: goal text encoded once per episode, frames preprocessed as in training, the decoder stepped
through its KV-cache, invalid actions masked, the executed action fed back as the previous action.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .bundle import Bundle
from .model import PolicyInput
from .preprocess import FrameError, prepare_frame
from .text import MAX_GOAL_CHARS, TextEncoder, text_encoder_from_spec


class GoalError(ValueError):
    """A goal the policy refuses (empty, too long, not text)."""


def validate_goal(goal) -> str:
    if not isinstance(goal, str):
        raise GoalError(f"goal must be a string, got {type(goal).__name__}")
    goal = " ".join(goal.split())
    if not goal:
        raise GoalError("goal is empty")
    if len(goal) > MAX_GOAL_CHARS:
        raise GoalError(f"goal has {len(goal)} characters; at most {MAX_GOAL_CHARS} are accepted")
    return goal


@dataclass
class Decision:
    action: str
    index: int
    probs: list[float]
    step: int  # episode step at which the decision was taken (0 = first)
    latency_ms: float

    def top(self, actions, k: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(self.probs)[::-1][:k]
        return [(actions[i], float(self.probs[i])) for i in order]


class PolicyRunner:
    def __init__(self, bundle: Bundle, *, device: str = "cpu", kv_window: int = 1000, greedy: bool = True,
                 seed: int = 0, text_encoder: TextEncoder | None = None, vision=None,
                 camera_rotation: dict[str, int] | None = None):
        self.bundle = bundle
        self.model = bundle.model.to(device).eval()
        self.device = device
        self.greedy = greedy
        self.actions = bundle.actions
        self.mask = bundle.action_mask().to(device)
        self.text = text_encoder or text_encoder_from_spec(bundle.text_encoder)
        if bundle.config.vision == "dinov2" and vision is None:
            from .vision import vision_provider_from_spec
            vision = vision_provider_from_spec(bundle.vision_encoder, device=device)
        self.vision = vision  # None for cnn bundles: the model reads pixels itself
        self.rotation = camera_rotation or {}
        self.kv_window = kv_window
        self.cache = self.model.new_cache(1, kv_window, device=device)
        self.rng = torch.Generator().manual_seed(seed)
        self.goal: str | None = None
        self.step = 0
        self.prev_action = bundle.config.n_actions
        self._text = self._text_mask = None

    @property
    def active(self) -> bool:
        return self.goal is not None

    def start_episode(self, goal: str) -> str:
        """Begin a new episode (preempting any running one): clears the KV-cache, encodes the goal once."""
        goal = validate_goal(goal)
        text, mask = self.text.encode_batch([goal])
        self._text, self._text_mask = text.to(self.device), mask.to(self.device)
        self.cache.reset()
        self.goal, self.step, self.prev_action = goal, 0, self.bundle.config.n_actions
        return goal

    def end_episode(self) -> None:
        self.goal = None
        self.cache.reset()

    def prepare(self, frames: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for spec in self.bundle.cameras:
            if spec.name not in frames:
                raise FrameError(f"no frame for camera {spec.name!r}")
            out[spec.name] = prepare_frame(frames[spec.name], spec, self.rotation.get(spec.name, 0))
        return out

    @torch.inference_mode()
    def act(self, frames: dict[str, np.ndarray], in_hand: bool) -> Decision:
        """Raw RGB frames (H, W, 3) uint8 per camera -> the next action; advances the episode."""
        if self.goal is None:
            raise RuntimeError("no active episode: call start_episode(goal) first")
        t0 = time.perf_counter()
        prepared = self.prepare(frames)
        images = {k: torch.from_numpy(v).to(self.device)[None] for k, v in prepared.items()}  # (1, H, W, 3)
        if self.vision is not None:
            images = {k: self.vision(v) for k, v in images.items()}
        images = {k: v[:, None] for k, v in images.items()}  # (B=1, T=1, ...)
        one = lambda x: torch.tensor([[x]], dtype=torch.long, device=self.device)  # noqa: E731
        inp = PolicyInput(images, self._text, self._text_mask, one(0), one(self.prev_action), one(int(in_hand)),
                          one(self.step))
        logits, _, _ = self.model(inp, cache=self.cache, action_mask=self.mask)
        probs = torch.softmax(logits[0, 0].float(), -1).cpu()
        if self.greedy:
            idx = int(torch.argmax(probs))
        else:
            idx = int(torch.multinomial(probs, 1, generator=self.rng))
        decision = Decision(self.actions[idx], idx, probs.tolist(), self.step, (time.perf_counter() - t0) * 1e3)
        self.prev_action, self.step = idx, self.step + 1
        return decision
