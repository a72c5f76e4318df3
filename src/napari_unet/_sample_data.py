"""Synthetic touching cells with ground truth, for trying every widget at once.

The images are generated (no download, no licence): irregular blobs packed
so that many touch, each with its own brightness, darker membranes where
cells meet, blur and noise, plus the instance labels they were drawn from.
Generation is seeded, so everyone sees the same sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

__all__ = ["make_cells_2d", "make_cells_3d", "synthetic_cells"]

LayerData = tuple[np.ndarray, dict[str, Any], str]


def synthetic_cells(
    shape: Sequence[int] = (256, 256),
    *,
    radius: tuple[float, float] = (9.0, 15.0),
    spacing: Sequence[float] | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Touching cells in 2D or 3D and their instance labels.

    Parameters
    ----------
    shape : sequence of int
        (Y, X) or (Z, Y, X).
    radius : (float, float), optional
        Range of cell radii, in ``spacing`` units.
    spacing : sequence of float, optional
        Pixel size per axis (e.g. ``(2, 1, 1)`` for planes twice as far apart
        as pixels); default 1 per axis.
    seed : int, optional
        Seed of the random generator.

    Returns
    -------
    image : ndarray of uint16, shape ``shape``
        Fluorescence-like intensities (about 100 to 3000).
    labels : ndarray of int32, shape ``shape``
        Cell instances 1..N, 0 = background.

    Raises
    ------
    ValueError
        For a shape with other than 2 or 3 axes, or a bad radius range.

    Notes
    -----
    Cell centres are drawn at random at least 1.5 minimum radii apart; each
    pixel belongs to its nearest centre when it lies within that cell's
    radius (perturbed by smooth noise, so cells are not discs). Cells that
    are close therefore share straight Voronoi borders, the hard case the
    U-Net's border weights are for.

    Examples
    --------
    >>> image, labels = synthetic_cells((64, 64), seed=1)
    >>> image.shape, labels.dtype.name, bool(labels.max() > 3)
    ((64, 64), 'int32', True)
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"`shape` must be (Y, X) or (Z, Y, X) with positive sizes, got {shape}")
    r_min, r_max = (float(r) for r in radius)
    if not 0 < r_min <= r_max:
        raise ValueError(f"`radius` must satisfy 0 < min <= max, got {radius}")
    spacing = (1.0,) * len(shape) if spacing is None else tuple(float(s) for s in spacing)
    if len(spacing) != len(shape) or min(spacing) <= 0:
        raise ValueError(f"`spacing` {spacing} must have {len(shape)} positive values")
    rng = np.random.default_rng(seed)
    extent = np.array(shape) * np.array(spacing)

    # Centres: dart throwing with a minimum distance, so cells pack and touch.
    min_dist = 1.5 * r_min
    volume = float(np.prod(extent))
    cell_volume = (np.pi * r_max**2) if len(shape) == 2 else (4 / 3 * np.pi * r_max**3)
    wanted = max(1, int(1.6 * volume / cell_volume))
    centres: list[np.ndarray] = []
    for _ in range(wanted * 30):
        point = rng.uniform(0, extent)
        if all(np.sum((point - c) ** 2) >= min_dist**2 for c in centres):
            centres.append(point)
            if len(centres) >= wanted:
                break
    centres_px = [
        tuple(min(s - 1, int(c / sp)) for c, sp, s in zip(point, spacing, shape, strict=True))
        for point in centres
    ]
    seeds = np.zeros(shape, dtype=np.int32)
    for number, where in enumerate(centres_px, start=1):
        seeds[where] = number
    distance, nearest = ndi.distance_transform_edt(
        seeds == 0, sampling=spacing, return_indices=True
    )
    owner = seeds[tuple(nearest)]
    radii = np.concatenate([[0.0], rng.uniform(r_min, r_max, len(centres_px))])
    # Smooth noise makes the outlines irregular (about +-20% of the radius).
    wobble = ndi.gaussian_filter(rng.standard_normal(shape), sigma=[4.0 / s for s in spacing])
    wobble /= max(float(np.abs(wobble).max()), 1e-6)
    labels = np.where(distance < radii[owner] * (1.0 + 0.2 * wobble), owner, 0).astype(np.int32)
    labels = _relabel(labels)

    # Intensities: per-cell brightness with texture, darker membranes, blur, noise.
    brightness = np.concatenate([[0.0], rng.uniform(0.45, 1.0, int(labels.max()))])
    image = brightness[labels]
    texture = ndi.gaussian_filter(rng.standard_normal(shape), sigma=1.5)
    image = image * (1.0 + 0.6 * texture)
    edges = _inner_edges(labels)
    image[edges] *= 0.35
    image = ndi.gaussian_filter(image, sigma=[1.0 / s for s in spacing])
    image = 0.08 + image + 0.04 * rng.standard_normal(shape)
    image = np.clip(image * 2800 + 100, 0, 65535).astype(np.uint16)
    return image, labels


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Consecutive ids; cells that the radius test emptied are dropped."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, dtype=np.int32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return lut[labels]


def _inner_edges(labels: np.ndarray) -> np.ndarray:
    """Cell pixels next to another id (background or a neighbour): the membrane."""
    footprint = ndi.generate_binary_structure(labels.ndim, 1)
    hi = ndi.maximum_filter(labels, footprint=footprint)
    lo = ndi.minimum_filter(labels, footprint=footprint)
    return (labels > 0) & ((hi != labels) | (lo != labels))


def make_cells_2d() -> list[LayerData]:
    """napari sample: a 256 x 256 image of touching cells and its ground truth."""
    image, labels = synthetic_cells((256, 256), seed=2015)
    return [
        (image, {"name": "synthetic cells", "colormap": "gray"}, "image"),
        (labels, {"name": "synthetic cells ground truth", "opacity": 0.5}, "labels"),
    ]


def make_cells_3d() -> list[LayerData]:
    """napari sample: a 12 x 160 x 160 stack of touching cells (planes 2 px apart)."""
    spacing = (2.0, 1.0, 1.0)
    image, labels = synthetic_cells((12, 160, 160), spacing=spacing, seed=2016)
    return [
        (image, {"name": "synthetic cell stack", "scale": spacing, "colormap": "gray"}, "image"),
        (
            labels,
            {"name": "synthetic cell stack ground truth", "scale": spacing, "opacity": 0.5},
            "labels",
        ),
    ]
