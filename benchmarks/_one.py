"""Run one comparison in this process and print its rows as JSON (the last stdout line).

``python -m benchmarks._one NAME [--quick] [--scale-1m] [--profile]``; `python -m
benchmarks` runs each comparison this way, in a fresh process, so that one library's memory
state (heap, page cache handles, open maps) never affects another comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json

from . import COMPARISONS
from ._harness import Settings

MARKER = "ROWS "


def run(name: str, settings: Settings) -> list[dict[str, object]]:
    module_name, function = COMPARISONS[name].split(":")
    rows = getattr(importlib.import_module(module_name), function)(settings)
    return [dataclasses.asdict(row) for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._one")
    parser.add_argument("name", choices=list(COMPARISONS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--scale-1m", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile the tiers cases")
    args = parser.parse_args()
    settings = Settings(quick=args.quick, scale_1m=args.scale_1m, profile=args.profile)
    print(MARKER + json.dumps(run(args.name, settings)), flush=True)


if __name__ == "__main__":
    main()
