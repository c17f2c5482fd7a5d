"""Atomic, checksummed training checkpoints that load without unpickling code.

A checkpoint is written to a temp file, fsynced and renamed over the old one, with a sidecar
`<name>.sha256`; loading verifies the checksum and uses `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        digest = _sha256(Path(tmp))
        # the checksum is written first under a temp name, so a crash between the two renames leaves a
        # checksum that does not match -> the loader reports it instead of silently trusting a stale file
        os.replace(tmp, path)
        _atomic_write_bytes(path.with_name(path.name + ".sha256"), (digest + "\n").encode())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint")
    sums = path.with_name(path.name + ".sha256")
    if not sums.is_file():
        raise CheckpointError(f"{path}: checksum file {sums.name} missing (interrupted write?)")
    if sums.read_text().strip() != _sha256(path):
        raise CheckpointError(f"{path}: checksum mismatch (corrupt or interrupted write)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise CheckpointError(f"{path}: cannot be loaded safely ({type(e).__name__}: {e})") from None
