"""Run the benchmarks and print one table.

Usage::

    python benchmarks/run.py            # all benchmarks
    python benchmarks/run.py tiling     # only modules whose name contains "tiling"
    python benchmarks/run.py --quick    # smaller sizes, for a smoke test

Every ``benchmarks/bench_*.py`` module defines ``run(quick: bool) -> list[Row]``.
Each row compares our implementation with a baseline measured in the same run
and reports the ratio, so figures from different machines stay comparable.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import Row, format_table  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="run modules whose name contains one of these")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    args = parser.parse_args()

    rows: list[Row] = []
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem
        if args.only and not any(word in name for word in args.only):
            continue
        module = importlib.import_module(name)
        start = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows.extend(module.run(quick=args.quick))
        print(f"  {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
