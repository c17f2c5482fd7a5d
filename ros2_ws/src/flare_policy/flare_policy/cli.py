"""`flare-policy`: convert FLaRe checkpoints, inspect bundles, run benchmarks.

Benchmarks are looked up by name: first in `flare_policy.bench.BENCHES`, then in `flare_policy.bench_ros.BENCHES`
(if that module exists). Each entry maps a name to `(main(argv) -> int, one-line help)`, so a new benchmark
is added by registering it there; nothing here changes.
"""
from __future__ import annotations

import argparse
import importlib
import sys

BENCH_MODULES = ("flare_policy.bench", "flare_policy.bench_ros")


def available_benches() -> dict:
    """name -> (main, help) from every bench module that imports (bench_ros is optional)."""
    found = {}
    for mod in BENCH_MODULES:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:  # the module exists but one of its imports is missing: say so
                found.setdefault("_errors", []).append(f"{mod}: {e}")
            continue
        for name, entry in getattr(m, "BENCHES", {}).items():
            found.setdefault(name, entry)
    return found


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flare-policy", description="FLaRe policy tools: checkpoint import, bundle "
                                "inspection and benchmarks.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    c = sub.add_parser("convert", help="FLaRe .pt/.ckpt -> policy bundle (stretch, 20 actions)",
                       description="Convert a released FLaRe checkpoint (RL FLaRe_<task>_*.pt or IL "
                       "FLaRe_IL_50000.ckpt) into a policy bundle. The file is read with weights_only=True: "
                       "files needing arbitrary unpickling are refused. Exact key set and shapes are checked.")
    c.add_argument("checkpoint", help="FLaRe_<task>_sparse_reward_<steps>.pt or FLaRe_IL_50000.ckpt")
    c.add_argument("out_dir", help="bundle directory to write")
    c.add_argument("--t5", metavar="DIR", help="local t5-small (transformers format incl. tokenizer); its weights "
                   "are checked against the checkpoint's T5 and the bundle points at it")
    c.add_argument("--dinov2", metavar="DIR", help="local dinov2-small (transformers format); checked and "
                   "recorded in the bundle")
    c.add_argument("--force", action="store_true", help="replace out_dir if it exists")

    i = sub.add_parser("inspect", help="print a bundle's self-description",
                       description="Validate a bundle by loading it and print embodiment, actions, cameras, "
                       "encoders, parameter count and provenance.")
    i.add_argument("bundle")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")

    b = sub.add_parser("bench", help="benchmarks (kv, step, ...); `flare-policy bench NAME --help`",
                       description="Run a benchmark by name. Available: " + ", ".join(
                           f"{k} ({v[1]})" for k, v in available_benches().items() if not k.startswith("_")),
                       add_help=True)
    b.add_argument("name", help="benchmark name")
    b.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark (see NAME --help)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "convert":
        from pathlib import Path

        from .convert import ConvertError, convert_checkpoint

        if Path(args.out_dir).exists() and not args.force:
            print(f"error: {args.out_dir} exists (use --force to replace it)", file=sys.stderr)
            return 2
        try:
            out = convert_checkpoint(args.checkpoint, args.out_dir, t5_dir=args.t5, dinov2_dir=args.dinov2)
        except ConvertError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        from .inspect_bundle import inspect_main

        print(inspect_main(out))
        return 0
    if args.cmd == "inspect":
        from .bundle import BundleError
        from .inspect_bundle import inspect_main

        try:
            print(inspect_main(args.bundle, as_json=args.json))
        except BundleError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if args.cmd == "bench":
        benches = available_benches()
        for err in benches.pop("_errors", []):
            print(f"warning: {err}", file=sys.stderr)
        if args.name not in benches:
            print(f"error: unknown benchmark {args.name!r}; available: {', '.join(sorted(benches))}", file=sys.stderr)
            return 2
        return int(benches[args.name][0](args.args) or 0)
    return 2


if __name__ == "__main__":
    sys.exit(main())
