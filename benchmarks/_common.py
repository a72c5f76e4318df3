"""Helpers for the benchmarks: a result row, timing, and the table."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Row:
    """One benchmark result.

    ``ratio`` is always "how many times better ours is than the baseline"
    (baseline time / our time, or our throughput / baseline throughput), so a
    ratio above 1 is good. ``goal`` is the ratio the issue asks for.
    """

    name: str
    baseline: str
    baseline_value: float
    ours_value: float
    unit: str
    ratio: float
    goal: str = ""


def best_of(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Smallest wall-clock time of ``repeat`` calls, in seconds, after warm-up calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def format_table(rows: list[Row]) -> str:
    header = ("benchmark", "baseline", "baseline", "ours", "unit", "ratio", "goal")
    lines = [
        (
            r.name,
            r.baseline,
            f"{r.baseline_value:.4g}",
            f"{r.ours_value:.4g}",
            r.unit,
            f"{r.ratio:.2f}x",
            r.goal,
        )
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=False)]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    out = [f"machine: {machine()}", fmt.format(*header), "-+-".join("-" * w for w in widths)]
    out += [fmt.format(*line) for line in lines]
    return "\n".join(out)
