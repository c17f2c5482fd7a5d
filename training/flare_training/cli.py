"""`flare-train` entry point: each subcommand lives in its own module with its own `--help`."""
from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "demos": ("flare_training.demos", "generate expert demonstrations for a mini-CHORES task"),
    "dagger": ("flare_training.dagger", "the learner drives, the expert labels (DAgger) -> demos for BC"),
    "bc": ("flare_training.bc", "behaviour cloning (SPOC-style imitation) -> policy bundle"),
    "ppo": ("flare_training.ppo", "FLaRe PPO fine-tuning of a bundle"),
    "eval": ("flare_training.evaluate", "evaluate a bundle: Success, SEL, episode length, %Rooms"),
    "bench": ("flare_training.bench", "benchmarks (env, PPO vs Stable-Baselines3, BC frames/s; each against its floor)"),
    "curves": ("flare_training.curves", "learning curves (success vs env steps) of PPO runs as a PNG"),
    "report": ("flare_training.report", "FLaRe's experiments on mini-CHORES: tables, ablations, curves"),
}


def usage() -> str:
    lines = ["usage: flare-train <command> [options]   (flare-train <command> --help for details)", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"flare-train: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
