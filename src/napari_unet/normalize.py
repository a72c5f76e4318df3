"""Percentile normalisation of input intensities, stored with the model.

Microscopy images come in every bit depth and brightness, so the network is
trained on intensities mapped by percentiles: the ``low`` percentile goes to
0 and the ``high`` one to 1 (CSBDeep / StarDist use 1 and 99.8). The
settings are saved in the model file (``metadata["normalization"]``) and
prediction applies exactly the same mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

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
