"""The tiler, mirror padding, blending and test-time augmentation."""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from collections.abc import Callable, Generator, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import RedundantComputeWarning
from ..inference import Backend, make_backend
from ._plan import (
    _MAX_TILE,
    _REDUNDANT_LIMIT,
    _context,
    _default_overlap,
    _divisor,
    _largest_valid_at_most,
    _round_up,
    _same_step,
    _spatial_dims,
    _valid_size,
    choose_tile_shape,
)


class _Tiler:
    """Plans and runs the tiles of one image shape."""

    def __init__(
        self,
        model: nn.Module,
        image_shape: tuple[int, int],
        tile_shape: Sequence[int] | None,
        device: torch.device,
        overlap: Sequence[int] | int | None,
        backend: Backend | None = None,
    ) -> None:
        # Eager channels_last fp32 unless told otherwise (inference.py).
        self.run = backend or make_backend(model, backend="eager", precision="fp32", device=device)
        self.model = model
        self.device = device
        nd = _spatial_dims(model)
        axes = range(nd)
        if tile_shape is None:
            tile = choose_tile_shape(model, image_shape, device)
        else:
            tile = tuple(int(t) for t in tile_shape)
            if len(tile) != nd or min(tile) < 1:
                raise ValueError(f"`tile_shape` must be {nd} positive integers, got {tile_shape}")
        d = tuple(_divisor(model, a) for a in axes)
        if model.padding == "same":
            if overlap is None:
                ov = tuple(_default_overlap(model, a) for a in axes)
            else:
                scalar = np.isscalar(overlap)
                ov = (int(overlap),) * nd if scalar else tuple(int(o) for o in overlap)
                if len(ov) != nd or min(ov) < 0:
                    raise ValueError(f"`overlap` must be 1 or {nd} integers >= 0, got {overlap}")
            # A tile must be larger than its overlap by one pooling cell, so
            # that tiles advance and keep the pooling grid.
            self.tile = tuple(_round_up(max(tile[a], ov[a] + d[a]), d[a]) for a in axes)
            self.overlap = ov
            self.step = tuple(_same_step(model, self.tile[a], ov[a], a) for a in axes)
        else:
            self.tile = self._round_valid_tile(tile)
            out = model.output_shape(self.tile)
            self.step = tuple(out[a] // d[a] * d[a] for a in axes)

    def _round_valid_tile(self, tile: Sequence[int]) -> tuple[int, ...]:
        model = self.model
        # Valid padding: the output must hold at least one pooling cell.
        rounded = []
        for axis, t in enumerate(tile):
            out = max(_divisor(model, axis), t - 2 * model.halo[axis])
            rounded.append(_valid_size(model, out, axis))
        return tuple(rounded)

    def _grid(self, image_shape: Sequence[int]) -> tuple[list[int], list[tuple[int, int]]]:
        """Tile counts per axis and (before, after) padding per axis."""
        counts, pads = [], []
        for size, tile, step, halo in zip(
            image_shape, self.tile, self.step, self._margin(), strict=True
        ):
            n = max(1, -(-(size + 2 * halo - (tile - step)) // step))
            if self.model.padding == "valid":
                n = max(1, -(-size // step))
            extent = (n - 1) * step + tile
            pads.append((halo, extent - size - halo))
            counts.append(n)
        return counts, pads

    def _margin(self) -> tuple[int, ...]:
        if self.model.padding == "same":
            return self.overlap
        return tuple(self.model.halo)

    @staticmethod
    def margin_of(model: nn.Module) -> tuple[int, ...]:
        """The context a tiler with the default overlap pads each side with."""
        if model.padding == "same":
            return tuple(_default_overlap(model, a) for a in range(_spatial_dims(model)))
        return tuple(model.halo)

    def count_tiles(self, image_shape: Sequence[int]) -> int:
        return math.prod(self._grid(image_shape)[0])

    def predict(
        self,
        image: np.ndarray,
        *,
        batch_size: int,
        with_margin: bool = False,
        trailing: int = 0,
    ) -> Generator[int, None, np.ndarray]:
        """Yields the number of tiles finished per batch; returns (classes, Y, X).

        With ``with_margin=True`` the image already carries :meth:`_margin`
        pixels of real context on every side (a chunk of a larger array with
        its neighbours' pixels), and only the interior is predicted.
        """
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
        margin = self._margin()
        if with_margin:
            size = tuple(
                s - 2 * m - trailing for s, m in zip(image.shape[1:], margin, strict=True)
            )
            counts, pads = self._grid(size)
            # The context is there already (plus `trailing` pixels after the
            # margin); only the last tiles need filling, and what fills them
            # never reaches the interior.
            padded = _mirror_pad(
                image,
                [(0, max(0, a - m - trailing)) for (_, a), m in zip(pads, margin, strict=True)],
            )
        else:
            size = image.shape[1:]
            counts, pads = self._grid(size)
            padded = _mirror_pad(image, pads)
        padded_t = torch.from_numpy(np.ascontiguousarray(padded))
        positions = [
            tuple(i * s for i, s in zip(index, self.step, strict=True))
            for index in itertools.product(*(range(c) for c in counts))
        ]
        classes = self.model.num_classes
        if self.model.padding == "valid":
            out = np.empty(
                (classes, *(c * s for c, s in zip(counts, self.step, strict=True))),
                dtype=np.float32,
            )
            weights = None
        else:
            out = np.zeros((classes, *padded.shape[1:]), dtype=np.float32)
            weights = np.zeros(padded.shape[1:], dtype=np.float32)
            window = _blend_window(self.tile, self.overlap, self._contexts())

        keep = (slice(None), *(slice(0, s) for s in self.step))
        for batch in _batched(positions, batch_size):
            tiles = torch.stack([padded_t[(slice(None), *_at(pos, self.tile))] for pos in batch])
            probs = self.run(tiles)
            for pos, p in zip(batch, probs, strict=True):
                if weights is None:
                    out[(slice(None), *_at(pos, self.step))] = p[keep]
                else:
                    out[(slice(None), *_at(pos, self.tile))] += p * window
                    weights[_at(pos, self.tile)] += window
            yield len(batch)

        if weights is None:
            return out[(slice(None), *(slice(0, n) for n in size))]
        np.divide(out, weights, out=out, where=weights > 0)
        return out[(slice(None), *(slice(b, b + n) for (b, _), n in zip(pads, size, strict=True)))]

    def _contexts(self) -> list[int]:
        return [_context(self.model, a) for a in range(len(self.tile))]

    def predict_into(
        self, image: np.ndarray, out: np.ndarray, *, batch_size: int, accumulate: bool
    ) -> Generator[int, None, None]:
        """Predict a (C, Y, X) image into ``out`` (classes, Y, X); yields tiles per batch.

        Only tile-sized buffers are made: each tile is cut from ``image``
        (any real dtype, any strides) with the mirror padding folded into its
        indices, and its kept part is written (``accumulate``: added) into
        ``out``. Same-padding blend weights are divided out per tile: their
        sum over tiles is separable, so two 1D sums replace an image-sized one.
        """
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
        size = image.shape[1:]
        counts, pads = self._grid(size)
        before = [b for b, _ in pads]
        positions = list(
            itertools.product(
                *(range(0, c * s, s) for c, s in zip(counts, self.step, strict=True))
            )
        )
        same = self.model.padding == "same"
        if same:
            ramps = _blend_ramps(self.tile, self.overlap, self._contexts())
            scales = []
            for ramp, n, step, (b, a), length in zip(
                ramps, counts, self.step, pads, size, strict=True
            ):
                total = np.zeros(b + length + a, dtype=np.float32)
                for i in range(n):
                    total[i * step : i * step + len(ramp)] += ramp
                scales.append((ramp, total))
        for batch in _batched(positions, batch_size):
            tiles = np.stack(
                [
                    self._cut(image, [p - b for p, b in zip(pos, before, strict=True)])
                    for pos in batch
                ]
            )
            probs = self.run(torch.from_numpy(tiles))
            if not np.isfinite(probs).all():
                # Finite but huge intensities (e.g. 1e37) overflow inside the network.
                raise ValueError(
                    "the model's output is not finite (NaN or infinite) for this image, whose "
                    f"largest magnitude is {float(np.abs(tiles).max()):.3g} in the failing tiles: "
                    "normalise the image (e.g. napari_unet.normalize) before predicting, "
                    "or check the model's weights"
                )
            for pos, p in zip(batch, probs, strict=True):
                if same:
                    self._blend_into(out, p, pos, before, size, scales)
                    continue
                kept = [min(s, n - q) for s, n, q in zip(self.step, size, pos, strict=True)]
                if min(kept) <= 0:
                    continue
                target = (slice(None), *_at(pos, kept))
                source = (slice(None), *(slice(0, k) for k in kept))
                if accumulate:
                    out[target] += p[source]
                else:
                    out[target] = p[source]
            yield len(batch)

    def _cut(self, image: np.ndarray, corner: Sequence[int]) -> np.ndarray:
        """The float32 tile at image position ``corner``, mirrored where it overhangs."""
        tile = image
        symmetric = min(image.shape[1:]) == 1  # as _mirror_pad
        # One axis at a time: a slice where the tile lies inside, else the
        # reflected indices (each step copies at most a tile-sized block).
        for axis, (start, length, n) in enumerate(
            zip(corner, self.tile, image.shape[1:], strict=True), start=1
        ):
            if 0 <= start and start + length <= n:
                index: slice | np.ndarray = slice(start, start + length)
            else:
                index = _reflect_indices(start, length, n, symmetric)
            tile = tile[(slice(None),) * axis + (index,)]
        return np.ascontiguousarray(tile, dtype=np.float32)

    def _blend_into(
        self,
        out: np.ndarray,
        p: np.ndarray,
        at: tuple[int, ...],
        before: Sequence[int],
        size: Sequence[int],
        scales: Sequence[tuple[np.ndarray, np.ndarray]],
    ) -> None:
        """Add a same-padding tile's weighted probabilities inside the image."""
        parts = []
        for pos, b, n, t, (ramp, total) in zip(at, before, size, self.tile, scales, strict=True):
            lo, hi = max(pos, b), min(pos + t, b + n)
            if lo >= hi:
                return
            norm = total[lo:hi]
            weight = np.divide(
                ramp[lo - pos : hi - pos], norm, where=norm > 0, out=np.zeros_like(norm)
            )
            parts.append((slice(lo - pos, hi - pos), slice(lo - b, hi - b), weight))
        source = (slice(None), *(part[0] for part in parts))
        target = (slice(None), *(part[1] for part in parts))
        out[target] += p[source] * functools.reduce(np.multiply.outer, [w for *_, w in parts])

    def warn_if_redundant(self, tile_shape: Sequence[int] | None) -> None:
        """Warn when a given tile computes > 4x the pixels it keeps (the halo dominates)."""
        if tile_shape is None:
            return
        factor = math.prod(self.tile) / math.prod(self.step)
        if factor <= _REDUNDANT_LIMIT:
            return
        # A 512 side for planes; a volume's tile grows as its cube (128**3 voxels).
        side = _MAX_TILE // 4 if len(self.tile) == 2 else _MAX_TILE // 16
        suggested = _largest_valid_at_most(self.model, side)
        used = "" if tuple(tile_shape) == self.tile else f" (rounded to {self.tile})"
        warnings.warn(
            f"`tile_shape` {tuple(tile_shape)}{used} computes {factor:.1f}x the pixels it "
            f"predicts: the network's context around each {'x'.join(map(str, self.step))} "
            f"output dominates; a tile of {(suggested,) * len(self.step)}, or `tile_shape=None` "
            "(the largest that fits in memory), wastes far less",
            RedundantComputeWarning,
            stacklevel=4,
        )


def _reflect_indices(start: int, length: int, n: int, symmetric: bool) -> np.ndarray:
    """Indices of positions ``start ... start + length - 1`` of a mirror-padded axis.

    As :func:`_mirror_pad`: ``np.pad(mode="reflect")`` is periodic with period
    ``2 * (n - 1)`` (also for pads longer than the axis, which ``np.pad``
    reflects repeatedly), ``mode="symmetric"`` with period ``2 * n``.
    """
    i = np.arange(start, start + length)
    period = 2 * n if symmetric else 2 * (n - 1)
    i = np.mod(i, period)
    return np.where(i >= n, period - i - (1 if symmetric else 0), i)


def _mirror_pad(image: np.ndarray, pads: Sequence[tuple[int, int]]) -> np.ndarray:
    """``np.pad(mode="reflect")`` that also works when a pad exceeds the image.

    NumPy reflects repeatedly for large pads, but an axis of length 1 cannot
    be reflected; it is repeated instead (the only sensible extrapolation).
    """
    width = [(0, 0), *pads]
    if min(image.shape[1:]) == 1:
        return np.pad(image, width, mode="symmetric")
    return np.pad(image, width, mode="reflect")


def _blend_window(
    tile: Sequence[int], overlap: Sequence[int], context: int | Sequence[int]
) -> np.ndarray:
    """Separable weights: 0 near the tile edge, rising linearly to 1 inside."""
    return functools.reduce(np.multiply.outer, _blend_ramps(tile, overlap, context))


def _at(corner: Sequence[int], extent: Sequence[int]) -> tuple[slice, ...]:
    """The window of ``extent`` starting at ``corner``."""
    return tuple(slice(c, c + e) for c, e in zip(corner, extent, strict=True))


def _blend_ramps(
    tile: Sequence[int], overlap: Sequence[int], context: int | Sequence[int]
) -> list[np.ndarray]:
    """The two 1D factors of :func:`_blend_window`.

    Within ``margin`` pixels of the edge (the network's context, or less when
    the overlap is too small for it) the weight is 0; it then rises linearly
    to 1 at ``overlap`` pixels from the edge.
    """
    contexts = [context] * len(tile) if np.isscalar(context) else list(context)
    ramps = []
    for t, o, c in zip(tile, overlap, contexts, strict=True):
        ramp = np.ones(t, dtype=np.float32)
        if o > 0:
            margin = min(c, (o - 1) // 2)
            rise = np.zeros(o, dtype=np.float32)
            rise[margin:] = np.arange(1, o - margin + 1, dtype=np.float32) / (o - margin)
            ramp[:o] = np.minimum(ramp[:o], rise)
            ramp[-o:] = np.minimum(ramp[-o:], rise[::-1])
        ramps.append(ramp)
    return ramps


def _batched(items: list, n: int) -> Iterator[list]:
    for start in range(0, len(items), n):
        yield items[start : start + n]


def _rot(k: int, flip: bool) -> tuple[Callable, Callable]:
    def forward(a: np.ndarray) -> np.ndarray:
        a = np.rot90(a, k, axes=(-2, -1))
        return a[..., ::-1] if flip else a

    def inverse(a: np.ndarray) -> np.ndarray:
        a = a[..., ::-1] if flip else a
        return np.rot90(a, -k, axes=(-2, -1))

    return forward, inverse


_DIHEDRAL = [_rot(k, flip) for flip in (False, True) for k in range(4)]
