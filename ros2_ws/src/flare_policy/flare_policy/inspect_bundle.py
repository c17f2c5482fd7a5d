"""`flare-policy inspect BUNDLE`: what a bundle says about itself (validated by loading it)."""
from __future__ import annotations

import json
from pathlib import Path

from .bundle import load_bundle


def describe(path) -> dict:
    """Load (and so validate) a bundle and return its self-description as plain JSON-able data."""
    b = load_bundle(path)
    mask = b.embodiment.action_mask()
    cfg = b.config
    files = {p.name: p.stat().st_size for p in sorted(Path(path).iterdir()) if p.is_file()}
    return {
        "path": str(Path(path).resolve()),
        "schema_version": b.meta.get("schema_version"),
        "embodiment": b.embodiment.name,
        "embodiment_description": b.embodiment.description,
        "actions": [{"index": i, "name": a, "allowed": ok} for i, (a, ok) in enumerate(zip(b.actions, mask))],
        "cameras": [c.to_dict() for c in b.cameras],
        "text_encoder": b.text_encoder,
        "vision_encoder": b.vision_encoder,
        "inference": b.meta.get("inference", {}),
        "model": cfg.to_dict(),
        "trainable_parameters": b.model.n_trainable(),
        "has_critic": (Path(path) / "critic.safetensors").is_file(),
        "provenance": b.provenance,
        "files": files,
    }


def format_description(d: dict) -> str:
    m = d["model"]
    allowed = [a["name"] for a in d["actions"] if a["allowed"]]
    lines = [
        f"bundle        {d['path']} (schema {d['schema_version']})",
        f"embodiment    {d['embodiment']}: {d['embodiment_description']}",
        f"actions       {len(d['actions'])}: " + ", ".join(f"{a['index']}={a['name']}" for a in d["actions"]),
    ]
    if len(allowed) < len(d["actions"]):
        lines.append(f"  allowed     {len(allowed)}: {', '.join(allowed)} (others masked to -inf)")
    for c in d["cameras"]:
        sc = c.get("stretch_crop")
        lines.append(f"camera        {c['name']}: resize {c['resize'][0]}x{c['resize'][1]} -> crop "
                     f"{c['crop'][0]}x{c['crop'][1]} (H x W)"
                     + (f" -> centre {sc[0]}x{sc[1]} stretched back (FLaRe's augmentation crop)" if sc else ""))
    enc = lambda e: ", ".join(f"{k}={v}" for k, v in e.items())  # noqa: E731
    lines += [
        f"text encoder  {enc(d['text_encoder'])}",
        f"vision        {enc(d['vision_encoder'])}",
        "inference     " + (enc(d["inference"]) if d["inference"] else "not recorded (node defaults: greedy, 1000 "
                             "steps)"),
        f"model         d_model {m['d_model']}, fusion {m['fusion_layers']} layers x {m['fusion_heads']} heads, "
        f"decoder {m['decoder_layers']} layers x {m['decoder_heads']} heads, vision {m['vision']} "
        f"{m['visual_grid'][0]}x{m['visual_grid'][1]} tokens/camera",
        f"parameters    {d['trainable_parameters']:,} trainable"
        + (" (+ separate critic copy)" if d["has_critic"] else ""),
    ]
    for k, v in d["provenance"].items():
        lines.append(f"provenance    {k}: {v}")
    lines.append("files         " + ", ".join(f"{k} ({v / 1e6:.1f} MB)" for k, v in d["files"].items()))
    return "\n".join(lines)


def inspect_main(path, as_json: bool = False) -> str:
    d = describe(path)
    return json.dumps(d, indent=2) if as_json else format_description(d)
