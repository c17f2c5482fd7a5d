"""What this CPU computes natively: the model name and the instruction-set flags that decide which precision
pays off (AVX2, AVX-512, VNNI, bf16, AMX). Every benchmark prints them, because figures are only comparable
between machines with the same flags."""
from __future__ import annotations

import functools
import platform

FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
         "amx_tile")


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """{"model": str, "flags": [relevant flags present], "bf16_native": bool, "vnni": bool}."""
    model, present = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key == "flags":
                    present = set(value.split())
                    break
    except OSError:
        pass
    flags = [f for f in FLAGS if f in present]
    return {"model": model, "flags": flags, "bf16_native": bool({"avx512_bf16", "amx_bf16"} & present),
            "vnni": bool({"avx512_vnni", "avx_vnni", "amx_int8"} & present)}


def describe() -> str:
    info = cpu_info()
    return f"CPU: {info['model']}; flags: {' '.join(info['flags']) or 'none of ' + ', '.join(FLAGS)}"


def use_bf16(mode: str) -> bool:
    """Resolve an amp option: "auto" = bf16 autocast only where the CPU has native bf16; "on"; "off"."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"amp must be 'auto', 'on' or 'off', got {mode!r}")
    return mode == "on" or (mode == "auto" and cpu_info()["bf16_native"])
