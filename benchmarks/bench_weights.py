"""Border weight map against the per-cell reference (issues 3 and 17).

The reference is the straightforward definition: one Euclidean distance
transform per cell over the whole image, sorted per pixel, the two smallest
kept, which costs pixels x cells. ``weight_map`` must agree with it to 1e-4
(checked here as well as in the tests) and be at least 100x faster on a
512x512 image with 150 touching cells (issue 17; 50x in issue 3), and scale
with the number of pixels. Each size has a row for the default (numba) path
and one for the SciPy fallback, both against the same reference run; the
last rows give the first call's cost in a new process.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from _common import Row, best_of
from napari_unet import weights
from napari_unet.weights import weight_map


def touching_cells(shape: tuple[int, ...], n: int, radius: float, seed: int = 0) -> np.ndarray:
    """Voronoi regions of ``n`` random seeds cut to ``radius``: cells touching along edges."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, dtype=np.int32)
    seeds[tuple(rng.integers(0, s, n) for s in shape)] = np.arange(1, n + 1)
    dist, nearest = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    labels = seeds[tuple(nearest)]
    labels[dist > radius] = 0
    return labels


def reference_weight_map(labels: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """1 + border term, by one full distance transform per cell."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    dists = np.stack([ndi.distance_transform_edt(labels != i) for i in ids])
    dists.sort(axis=0)
    border = w0 * np.exp(-((dists[0] + dists[1]) ** 2) / (2 * sigma**2))
    return 1.0 + np.where(labels == 0, border, 0.0)


def _row(size: int, cells: int, goal: str) -> list[Row]:
    labels = touching_cells((size, size), cells, radius=0.6 * size / np.sqrt(cells))
    start = time.perf_counter()
    expected = reference_weight_map(labels)
    reference_s = time.perf_counter() - start
    rows = []
    paths = [("numba", weights._compiled_border_term), ("SciPy path", lambda: None)]
    if weights._compiled_border_term() is None:
        paths = [("SciPy path, numba not installed", weights._compiled_border_term)]
    for path, compiled in paths:
        with _border_term_from(compiled):
            got = weight_map(labels, class_weights=None)
            error = float(np.abs(got - expected).max())
            if error > 1e-4:
                raise AssertionError(
                    f"weight_map ({path}) differs from the reference by {error:.2g}"
                )
            ours_s = best_of(lambda: weight_map(labels, class_weights=None), repeat=7)
        rows.append(
            Row(
                name=f"weight_map {size}x{size}, {cells} cells, {path} (max err {error:.1g})",
                baseline="per-cell EDT",
                baseline_value=reference_s * 1e3,
                ours_value=ours_s * 1e3,
                unit="ms",
                ratio=reference_s / ours_s,
                goal=goal if path == "numba" else "",
            )
        )
    return rows


@contextlib.contextmanager
def _border_term_from(compiled: Callable[[], object]) -> Iterator[None]:
    """weight_map with the compiled kernel ``compiled()`` returns (None: the SciPy path)."""
    default = weights._compiled_border_term
    weights._compiled_border_term = compiled
    try:
        yield
    finally:
        weights._compiled_border_term = default


FIRST_CALL = """
import sys, time
import numpy as np
start = time.perf_counter()
from napari_unet.weights import weight_map
imported = time.perf_counter()
labels = np.load(sys.argv[1])
weight_map(labels, class_weights=None)
first = time.perf_counter()
weight_map(labels, class_weights=None)
print(imported - start, first - imported, time.perf_counter() - first)
"""


def _first_call_rows(size: int, cells: int) -> list[Row]:
    """The first weight map in a new process: numba's import and its kernels' compilation.

    Once from numba's on-disk cache (filled by the runs above), once with an
    empty cache directory (a first run after installing or changing the code).
    """
    if weights._compiled_border_term() is None:
        return []
    labels = touching_cells((size, size), cells, radius=0.6 * size / np.sqrt(cells))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "labels.npy"
        np.save(path, labels)
        for cache, env in [
            ("cached kernels", {}),
            ("empty cache: compiles", {"NUMBA_CACHE_DIR": str(Path(scratch) / "numba")}),
        ]:
            done = subprocess.run(
                [sys.executable, "-c", FIRST_CALL, str(path)],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                check=True,
            )
            imported, first, second = (float(x) for x in done.stdout.split())
            rows.append(
                Row(
                    name=f"first weight_map {size}x{size} in a new process, {cache} "
                    f"(import {imported * 1e3:.0f} ms)",
                    baseline="second call",
                    baseline_value=second * 1e3,
                    ours_value=first * 1e3,
                    unit="ms",
                    ratio=second / first,
                    goal="(one-off cost)",
                )
            )
    return rows


def run(quick: bool = False) -> list[Row]:
    if quick:
        return _row(128, 20, ">= 100x")
    return [
        *_row(512, 150, ">= 100x"),
        *_row(1024, 400, ">= 100x"),
        *_first_call_rows(512, 150),
    ]
