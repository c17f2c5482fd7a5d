"""Which simulator the PPO loop and evaluation drive: `--env minichores` (default) or `--env ai2thor`.

mini-CHORES gets exactly the arguments it always got; AI2-THOR additionally gets its settings (the YAML of
`--env-config`, `thor.ThorSettings`) and the bundle's camera specs, which decide the frames it returns.
"""
from __future__ import annotations

ENVS = ("minichores", "ai2thor")


def backend_env_kwargs(env: str, env_config: str, bundle) -> dict:
    """Extra environment arguments for `env`; {} for mini-CHORES. `bundle` needs `.cameras` and `.config`."""
    if env == "minichores":
        if env_config:
            raise ValueError("--env-config is for --env ai2thor only")
        return {}
    if env == "ai2thor":
        if not env_config:
            raise ValueError("--env ai2thor needs --env-config FILE: a YAML of AI2-THOR settings (task_specs, "
                             "houses, executable or commit_id/platform; see README, section AI2-THOR)")
        if bundle.config.vision == "dinov2":  # FLaRe's frozen DINOv2 reads 224x384 frames (flare_policy.vision)
            from flare_policy.vision import FRAME_HW

            bad = [c.name for c in bundle.cameras if tuple(c.input_shape[:2]) != tuple(FRAME_HW)]
            if bad:
                raise ValueError(f"bundle {getattr(bundle, 'path', '')}: DINOv2 vision needs {FRAME_HW[0]}x"
                                 f"{FRAME_HW[1]} frames, but camera(s) {bad} are prepared to another size")
        from .thor import ThorSettings

        return {"env": "ai2thor", "settings": ThorSettings.from_yaml(env_config), "cameras": list(bundle.cameras)}
    raise ValueError(f"unknown env {env!r}; known: {ENVS}")


def make_backend_env(task: str, env: str = "minichores", **kwargs):
    """A mini-CHORES env (`envs.make_env`) or an AI2-THOR env (`envs.thor.make_thor_env`)."""
    if env == "ai2thor":
        from .thor import make_thor_env

        return make_thor_env(task, **kwargs)
    if env != "minichores":
        raise ValueError(f"unknown env {env!r}; known: {ENVS}")
    from . import make_env

    return make_env(task, **kwargs)
