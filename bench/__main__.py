"""Run the benchmarks: ``python -m bench [--only NAME] [--quick]``.

Prints one table (this project's figure, the reference measured in the same run, the ratio) and
writes the rows as JSON under ``bench/results/``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from bench.timing import machine

BENCHMARKS = ("mask_chain", "segment_click", "inpaint_overhead", "relight_preview", "batch_throughput")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=BENCHMARKS, action="append", help="run only this benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args(argv)

    rows = []
    for name in args.only or BENCHMARKS:
        rows.extend(importlib.import_module(f"bench.{name}").run(quick=args.quick))

    print(f"machine: {machine()}")
    width = max(len(row["name"]) for row in rows)
    print(f"{'benchmark':{width}} {'ms':>9} {'reference ms':>13} {'ratio':>7}  reference")
    for row in rows:
        reference_ms = row["reference_ms"]
        ratio = f"{reference_ms / row['ms']:.1f}×" if reference_ms else ""
        ref = f"{reference_ms:13.1f}" if reference_ms else " " * 13
        print(f"{row['name']:{width}} {row['ms']:9.1f} {ref} {ratio:>7}  {row['reference'] or ''}")

    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    out = results / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    print(f"wrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
