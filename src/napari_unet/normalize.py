"""Percentile normalisation of input intensities, stored with the model.

Microscopy images come in every bit depth and brightness, so the network is
trained on intensities mapped by percentiles: the ``low`` percentile goes to
0 and the ``high`` one to 1 (CSBDeep / StarDist use 1 and 99.8). The
settings are saved in the model file (``metadata["normalization"]``) and
prediction applies exactly the same mapping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import dask.array

__all__ = ["Normalization", "percentile_normalize"]

_SCOPES = ("image", "dataset", "none")


def percentile_normalize(
    image: np.ndarray,
    *,
    low: float = 1.0,
    high: float = 99.8,
    axis: tuple[int, ...] | None = None,
    eps: float = 1e-6,
) -> np.ndarray:
    """Map the ``low``/``high`` percentiles of ``image`` to 0 and 1.

    Parameters
    ----------
    image : ndarray
        Any shape and real dtype.
    low, high : float, optional
        Percentiles, ``0 <= low < high <= 100``.
    axis : tuple of int, optional
        Axes over which the percentiles are taken; the others are normalised
        independently (e.g. ``axis=(1, 2)`` for a (C, Y, X) image normalises
        each channel on its own). None: all axes.
    eps : float, optional
        Added to the range so that constant images do not divide by zero.

    Returns
    -------
    normalized : ndarray of float32
        Same shape; values are not clipped.

    Examples
    --------
    >>> out = percentile_normalize(np.arange(101.0), low=0, high=100)
    >>> float(out[0]), float(out[-1])
    (0.0, 1.0)
    """
    _check_percentiles(low, high)
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise ValueError(f"`image` must be real-valued, got dtype {image.dtype}")
    data = image.astype(np.float32, copy=False)
    lo, hi = np.percentile(data, [low, high], axis=axis, keepdims=True)
    return ((data - lo) / (hi - lo + eps)).astype(np.float32, copy=False)


def _check_percentiles(low: float, high: float) -> None:
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= `low` < `high` <= 100, got {low}, {high}")


@dataclass
class Normalization:
    """How images are normalised before they enter the network.

    Parameters
    ----------
    scope : {"image", "dataset", "none"}
        ``"image"`` (default): percentiles of each image (each plane of a
        stack, each channel separately), computed again for every image at
        prediction, which is robust to brightness changes between images.
        ``"dataset"``: fixed per-channel values ``lo``/``hi`` measured once on
        the training images and stored, for data whose absolute intensities
        carry meaning. ``"none"``: cast to float32 only.
    low, high : float
        Percentiles (``"image"`` and, when fitting, ``"dataset"``).
    lo, hi : list of float, optional
        The fitted per-channel values of the ``"dataset"`` scope.
    """

    scope: str = "image"
    low: float = 1.0
    high: float = 99.8
    lo: list[float] | None = None
    hi: list[float] | None = None

    def __post_init__(self) -> None:
        if self.scope not in _SCOPES:
            raise ValueError(f"`scope` must be one of {_SCOPES}, got {self.scope!r}")
        _check_percentiles(self.low, self.high)

    def fit(self, images: list[np.ndarray]) -> Normalization:
        """Measure the ``"dataset"`` values on (C, *spatial) images; other scopes unchanged.

        Returns
        -------
        normalization : Normalization
            A fitted copy.
        """
        if self.scope != "dataset":
            return Normalization(**asdict(self))
        if not images:
            raise ValueError("`images` is empty: nothing to fit the normalisation on")
        channels = {im.shape[0] for im in images}
        if len(channels) != 1:
            raise ValueError(f"`images` have different channel counts {sorted(channels)}")
        # Percentiles of a subsample keep fitting cheap on large data sets.
        rng = np.random.default_rng(0)
        lo, hi = [], []
        for c in range(channels.pop()):
            values = np.concatenate([im[c].ravel() for im in images]).astype(np.float32)
            if values.size > 4_000_000:
                values = rng.choice(values, 4_000_000, replace=False)
            a, b = np.percentile(values, [self.low, self.high])
            lo.append(float(a))
            hi.append(float(b))
        return Normalization(self.scope, self.low, self.high, lo, hi)

    def __call__(self, image: np.ndarray, *, channel_axis: int | None = 0) -> np.ndarray:
        """Normalise an image with a channel axis (or none) and any spatial axes.

        Parameters
        ----------
        image : ndarray
            E.g. (C, Y, X) with ``channel_axis=0``, or (Y, X) / (Z, Y, X)
            with ``channel_axis=None``.
        channel_axis : int or None, optional
            Channels are normalised independently.

        Returns
        -------
        normalized : ndarray of float32
        """
        image = np.asarray(image)
        if self.scope == "none":
            return image.astype(np.float32, copy=False)
        if channel_axis is None:
            image = image[np.newaxis]
            channel_axis = 0
            squeeze = True
        else:
            squeeze = False
        channel_axis = channel_axis % image.ndim
        moved = np.moveaxis(image, channel_axis, 0)
        if self.scope == "image":
            # Percentiles over the last two axes: per channel and per plane of a stack.
            out = percentile_normalize(moved, low=self.low, high=self.high, axis=(-2, -1))
        else:
            if self.lo is None or self.hi is None:
                raise ValueError("the 'dataset' normalisation has not been fitted (call fit())")
            if moved.shape[0] != len(self.lo):
                raise ValueError(
                    f"`image` has {moved.shape[0]} channels, the normalisation was fitted "
                    f"on {len(self.lo)}"
                )
            shape = (-1,) + (1,) * (moved.ndim - 1)
            lo = np.asarray(self.lo, np.float32).reshape(shape)
            hi = np.asarray(self.hi, np.float32).reshape(shape)
            out = (moved.astype(np.float32) - lo) / (hi - lo + 1e-6)
        out = np.moveaxis(out.astype(np.float32, copy=False), 0, channel_axis)
        return out[0] if squeeze else out

    def apply_dask(
        self, array: dask.array.Array, *, channel_axis: int | None = 0
    ) -> dask.array.Array:
        """The same mapping as calling this object, applied lazily to a Dask array (float32).

        Parameters
        ----------
        array : dask.array.Array
            (..., Y, X) with an optional channel axis; any chunks.
        channel_axis : int or None, optional
            Channels are normalised independently.

        Returns
        -------
        normalized : dask.array.Array of float32
            Same shape and axis order.

        Notes
        -----
        With ``scope="image"`` the percentiles of every plane are computed
        first (one pass over the data, plane by plane): exactly, from
        histograms summed over the chunks, for integer images of up to 16
        bits; from a regular subsample of at most ~4 million pixels per
        plane otherwise.
        """
        import dask.array as da

        if self.scope == "none":
            return array.astype(np.float32)
        moved = array[np.newaxis] if channel_axis is None else da.moveaxis(array, channel_axis, 0)
        moved = moved.rechunk({0: -1})
        if self.scope == "dataset":
            if self.lo is None or self.hi is None or moved.shape[0] != len(self.lo):
                raise ValueError(
                    f"the model's dataset normalisation does not fit {moved.shape[0]} channel(s)"
                )
            shape = (-1,) + (1,) * (moved.ndim - 1)
            lo = np.asarray(self.lo, np.float32).reshape(shape)
            hi = np.asarray(self.hi, np.float32).reshape(shape)
            out = (moved.astype(np.float32) - lo) / (hi - lo + 1e-6)
        else:
            lo, hi = _plane_percentiles(moved, self.low, self.high)
            lo, hi = lo[..., np.newaxis, np.newaxis], hi[..., np.newaxis, np.newaxis]
            # As percentile_normalize: (x - lo) / (hi - lo + eps) in float32.
            out = (moved.astype(np.float32) - lo) / (hi - lo + np.float32(1e-6))
        out = out.astype(np.float32)
        return out[0] if channel_axis is None else da.moveaxis(out, 0, channel_axis)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, stored as ``metadata["normalization"]``."""
        return {"method": "percentile", **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Normalization:
        """Rebuild from :meth:`to_dict` output; None (old files) means ``scope="image"``."""
        if not data:
            return cls()
        method = data.get("method", "percentile")
        if method != "percentile":
            raise ValueError(f"unknown normalisation method {method!r} in the model file")
        fields = {k: data[k] for k in ("scope", "low", "high", "lo", "hi") if k in data}
        return cls(**fields)


def _plane_percentiles(
    moved: dask.array.Array, low: float, high: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per channel and plane percentiles of a (C, ..., Y, X) Dask array, one plane at a time."""
    import dask

    dtype = moved.dtype
    exact = np.issubdtype(dtype, np.integer) and dtype.itemsize <= 2
    lo = np.empty(moved.shape[:-2], np.float32)
    hi = np.empty(moved.shape[:-2], np.float32)
    for index in np.ndindex(*moved.shape[1:-2]):
        plane = moved[(slice(None), *index)]
        if exact:
            first = int(np.iinfo(dtype).min)
            bins = 2 ** (8 * dtype.itemsize)
            parts = [
                dask.delayed(_block_histogram)(block, first, bins)
                for block in plane.to_delayed().ravel()
            ]
            counts = dask.delayed(sum)(parts).compute()
            values = np.stack([_histogram_percentiles(c, first, (low, high)) for c in counts])
        else:
            step = max(1, int(np.ceil(np.sqrt(plane.shape[-2] * plane.shape[-1] / 4e6))))
            sample = plane[:, ::step, ::step].compute().astype(np.float32)
            values = np.percentile(sample, [low, high], axis=(-2, -1)).T
        lo[(slice(None), *index)] = values[:, 0]
        hi[(slice(None), *index)] = values[:, 1]
    return lo, hi


def _block_histogram(block: np.ndarray, first: int, bins: int) -> np.ndarray:
    """Counts of every value per channel of a (C, y, x) block."""
    flat = block.reshape(block.shape[0], -1).astype(np.int64) - first
    return np.stack([np.bincount(row, minlength=bins) for row in flat])


def _histogram_percentiles(counts: np.ndarray, first: int, qs: Sequence[float]) -> np.ndarray:
    """``np.percentile(values, qs)`` (linear method) from a histogram of integer values."""
    cumulative = np.cumsum(counts)
    n = int(cumulative[-1])
    out = []
    for q in qs:
        position = (n - 1) * q / 100.0
        k = int(np.floor(position))
        below = np.searchsorted(cumulative, k, side="right") + first
        above = np.searchsorted(cumulative, min(k + 1, n - 1), side="right") + first
        out.append(np.float32(below + (position - k) * (above - below)))
    return np.array(out, np.float32)
