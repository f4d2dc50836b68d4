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

BENCHMARKS = ("mask_chain", "segment_click", "sam2_click", "inpaint_overhead", "removal", "relight_preview",
              "batch_throughput", "engine_server", "startup", "gpu", "peers")


def table(rows: list[dict]) -> str:
    """The rows as a text table: figure, reference figure (same run, same unit), ratio, reference.

    The ratio is reference ÷ figure: above 1 this project is faster (or smaller) than the reference.
    """
    width = max(len(row["name"]) for row in rows)
    lines = [f"{'benchmark':{width}} {'value':>10} {'reference':>10} {'ratio':>7}  unit  reference"]
    for row in rows:
        reference = row.get("reference_ms")
        ratio = f"{reference / row['ms']:.2g}×" if reference and row["ms"] else ""
        ref = f"{reference:10.1f}" if reference else " " * 10
        lines.append(f"{row['name']:{width}} {row['ms']:10.1f} {ref} {ratio:>7}  {row.get('unit', 'ms'):4}  "
                     f"{row.get('reference') or ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=BENCHMARKS, action="append", help="run only this benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results",
                        help="folder for the JSON file (default bench/results)")
    args = parser.parse_args(argv)

    rows = []
    for name in args.only or BENCHMARKS:
        rows.extend(importlib.import_module(f"bench.{name}").run(quick=args.quick))

    print(f"machine: {machine()}")
    print(table(rows))

    results = args.results
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    print(f"wrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
