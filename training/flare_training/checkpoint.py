"""Atomic, checksummed training checkpoints that load without unpickling code.

A checkpoint is written to a temp file and fsynced; its checksum goes to `<name>.sha256.pending`, then the data
and the checksum are renamed into place in that order. A kill between the two renames leaves new data with the
old `<name>.sha256` but a matching `.pending`, which the loader accepts; loading verifies the checksum and uses
`torch.load(weights_only=True)`.
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
    sums, pending = path.with_name(path.name + ".sha256"), path.with_name(path.name + ".sha256.pending")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _atomic_write_bytes(pending, (_sha256(Path(tmp)) + "\n").encode())
        os.replace(tmp, path)
        os.replace(pending, sums)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint")
    digest = _sha256(path)
    sums = [path.with_name(path.name + ext) for ext in (".sha256", ".sha256.pending")]
    known = [p.read_text().strip() for p in sums if p.is_file()]
    if not known:
        raise CheckpointError(f"{path}: checksum file {sums[0].name} missing (interrupted write?)")
    if digest not in known:
        raise CheckpointError(f"{path}: checksum mismatch (corrupt or interrupted write)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise CheckpointError(f"{path}: cannot be loaded safely ({type(e).__name__}: {e})") from None
