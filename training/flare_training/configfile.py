"""YAML files of training options: a mapping whose keys are the fields of a config dataclass."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import yaml


def dataclass_from_yaml(cls, path, what: str):
    """cls(**mapping in `path`); `what` names the options in errors (e.g. "PPO options")."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of {what}")
    unknown = set(raw) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"{path}: unknown {what} {sorted(unknown)}")
    return cls(**raw)
