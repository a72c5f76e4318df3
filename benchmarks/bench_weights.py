"""Border weight map against the per-cell reference (issue 3).

The reference is the straightforward definition: one Euclidean distance
transform per cell over the whole image, sorted per pixel, the two smallest
kept, which costs pixels x cells. ``weight_map`` must agree with it to 1e-4
(checked here as well as in the tests) and be at least 50x faster on a
512x512 image with 150 touching cells, and scale with the number of pixels.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage as ndi

from _common import Row, best_of
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


def _row(size: int, cells: int, goal: str) -> Row:
    labels = touching_cells((size, size), cells, radius=0.6 * size / np.sqrt(cells))
    start = time.perf_counter()
    expected = reference_weight_map(labels)
    reference_s = time.perf_counter() - start
    got = weight_map(labels, class_weights=None)
    error = float(np.abs(got - expected).max())
    if error > 1e-4:
        raise AssertionError(f"weight_map differs from the reference by {error:.2g}")
    ours_s = best_of(lambda: weight_map(labels, class_weights=None), repeat=7)
    return Row(
        name=f"weight_map {size}x{size}, {cells} cells (max err {error:.1g})",
        baseline="per-cell EDT",
        baseline_value=reference_s * 1e3,
        ours_value=ours_s * 1e3,
        unit="ms",
        ratio=reference_s / ours_s,
        goal=goal,
    )


def run(quick: bool = False) -> list[Row]:
    if quick:
        return [_row(128, 20, ">= 50x")]
    return [_row(512, 150, ">= 50x (< 50 ms)"), _row(1024, 400, ">= 50x")]
