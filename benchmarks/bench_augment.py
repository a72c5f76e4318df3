"""Elastic deformation against the ``elasticdeform`` algorithm in SciPy (issue 3).

``elasticdeform`` (which no longer imports with NumPy 2) deforms with a
cubic-spline zoom of the coarse displacement grid to every pixel, then
``scipy.ndimage.map_coordinates`` with order 3 for the image and order 0
for the labels; that algorithm is reimplemented here as the baseline.
``elastic_deform`` must be at least 3x faster on the CPU for one 512x512
image + label pair.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage as ndi

from _common import Row
from napari_unet.augment import elastic_deform


def scipy_elastic(
    image: np.ndarray, labels: np.ndarray, *, grid: int = 3, sigma: float = 10.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """elasticdeform.deform_random_grid's algorithm: spline-zoomed grid, map_coordinates."""
    shape = labels.shape
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0.0, sigma, size=(len(shape), *([grid] * len(shape))))
    factors = [n / grid for n in shape]
    coordinates = list(
        np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    )
    for axis in range(len(shape)):
        coordinates[axis] += ndi.zoom(coarse[axis], factors, order=3)
    out_image = np.stack(
        [ndi.map_coordinates(c, coordinates, order=3, mode="mirror") for c in image]
    )
    out_labels = ndi.map_coordinates(labels, coordinates, order=0, mode="mirror")
    return out_image, out_labels


def _best_interleaved(
    first: Callable[[], object], second: Callable[[], object], repeat: int
) -> tuple[float, float]:
    """Smallest times of two functions called alternately, after one warm-up each.

    On a shared machine the load changes from second to second; alternating
    exposes both functions to the same conditions, so the ratio stays fair.
    """
    first()
    second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


def _data(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.random((1, *shape), dtype=np.float32)
    labels = rng.integers(0, 400, shape).astype(np.uint16)
    return image, labels


def _row(shape: tuple[int, ...], goal: str, device: str = "cpu", threads: int = 0) -> Row:
    """One comparison; ``threads`` > 0 limits PyTorch's CPU threads for this row only."""
    image, labels = _data(shape)
    if device == "cpu":

        def ours() -> object:
            return elastic_deform(image, labels, rng=0)

    else:
        image_d = torch.from_numpy(image).to(device)
        labels_d = torch.from_numpy(labels.astype(np.int64)).to(device)

        def ours() -> object:
            out = elastic_deform(image_d, labels_d, rng=0)
            torch.cuda.synchronize()
            return out

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        baseline_s, ours_s = _best_interleaved(
            lambda: scipy_elastic(image, labels), ours, repeat=10 if len(shape) == 2 else 2
        )
    finally:
        torch.set_num_threads(before)
    size = "x".join(map(str, shape))
    where = device if device != "cpu" else f"cpu, {threads or before} thr"
    return Row(
        name=f"elastic_deform {size} image+labels ({where})",
        baseline="scipy (elasticdeform alg.)",
        baseline_value=baseline_s * 1e3,
        ours_value=ours_s * 1e3,
        unit="ms",
        ratio=baseline_s / ours_s,
        goal=goal,
    )


def run(quick: bool = False) -> list[Row]:
    if quick:
        return [_row((128, 128), ">= 3x")]
    # SciPy runs on one core: the one-thread row compares like with like, and
    # stays meaningful when other processes load the machine (PyTorch's
    # threads then wait on each other at every operation).
    rows = [
        _row((512, 512), ">= 3x"),
        _row((512, 512), "", threads=1),
        _row((64, 128, 128), ""),
    ]
    if torch.cuda.is_available():
        rows.append(_row((512, 512), "", device="cuda"))
    return rows
