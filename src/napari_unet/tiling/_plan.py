"""Tile sizes, memory budgets and overlaps (part of :mod:`napari_unet.tiling`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..devices import select_device

# Activation memory of a forward pass in inference mode, in float32 values per
# input pixel and per base channel. Measured on the CPU for depth-4 U-Nets
# (peak RSS growth / (input pixels * base_channels)); deeper levels add little
# because they are 4x smaller per level.
_FLOATS_PER_PIXEL_PER_BASE_CHANNEL = 5.5
_CPU_BUDGET_BYTES = 2 * 2**30
_MAX_TILE = 2048
# Tiles computing more than this many input pixels per kept output pixel get a warning.
_REDUNDANT_LIMIT = 4.0


def choose_tile_shape(
    model: nn.Module,
    image_shape: Sequence[int],
    device: str | torch.device | None = None,
    *,
    memory_budget: int | None = None,
) -> tuple[int, ...]:
    """The largest valid input tile that fits a memory budget and the image.

    Parameters
    ----------
    model : torch.nn.Module
        A 2D or 3D model with the U-Net shape helpers.
    image_shape : sequence of 2 or 3 int
        (Y, X) of the image, or (Z, Y, X) of the volume, to predict.
    device : str or torch.device, optional
        Where prediction runs; sets the default budget.
    memory_budget : int, optional
        Bytes of activation memory one tile may use. Default: half of the free
        memory on CUDA, 2 GiB on MPS and the CPU.

    Returns
    -------
    tile_shape : tuple of int
        A valid input shape, square (a cube in voxels) unless the image is
        smaller along an axis; for a stack of few planes, the planes' share
        of the budget grows.

    Notes
    -----
    Larger tiles waste less of each tile on the halo (a 572 tile of the paper's
    network keeps 46% of its pixels as output, a 1148 tile 71%), so the
    largest tile that fits is also the fastest.
    """
    dev = select_device(device)
    if memory_budget is None:
        memory_budget = _default_budget(dev)
    nd = _spatial_dims(model)
    image_shape = tuple(int(n) for n in image_shape)
    if len(image_shape) != nd:
        raise ValueError(f"`image_shape` must have {nd} axes for this model, got {image_shape}")
    # Models may state their own activation footprint (U-Net++ keeps every
    # node of a level alive: 14.5 floats per pixel and base channel at depth 4).
    floats = getattr(
        model, "floats_per_pixel_per_base_channel", _FLOATS_PER_PIXEL_PER_BASE_CHANNEL
    )
    bytes_per_pixel = 4 * floats * getattr(model, "base_channels", 64)
    pixels = max(memory_budget, 1) / bytes_per_pixel
    side = int(math.sqrt(pixels)) if nd == 2 else int(pixels ** (1.0 / nd))
    caps = [_largest_valid_at_most(model, max(min(side, _MAX_TILE), 1), a) for a in range(nd)]
    if nd == 3:
        # A stack of few planes needs less than a cube's side along Z: the
        # spare budget goes to larger planes.
        z_tile = _tight_tile(model, image_shape[0], caps[0], 0)
        if z_tile < caps[0]:
            side = int(math.sqrt(pixels / z_tile))
            caps[1:] = [_largest_valid_at_most(model, min(side, _MAX_TILE), a) for a in (1, 2)]
    return tuple(  # type: ignore[return-value]
        _tight_tile(model, size, cap, axis)
        for axis, (size, cap) in enumerate(zip(image_shape, caps, strict=True))
    )


# -- internals ---------------------------------------------------------------------------------


def _spatial_dims(model: nn.Module) -> int:
    return int(getattr(model, "spatial_dims", 2))


def _divisor(model: nn.Module, axis: int) -> int:
    divisors = getattr(model, "divisors", None)
    return int(divisors[axis]) if divisors is not None else int(model.divisor)


def _valid_size(model: nn.Module, out: int, axis: int) -> int:
    """Smallest valid input size along ``axis`` whose output is >= ``out``."""
    wanted = [1] * _spatial_dims(model)
    wanted[axis] = out
    return int(model.valid_input_shape(tuple(wanted))[axis])


def _output_size(model: nn.Module, n: int, axis: int) -> int:
    shape = [_valid_size(model, 1, a) for a in range(_spatial_dims(model))]
    shape[axis] = n
    return int(model.output_shape(tuple(shape))[axis])


def _tight_tile(model: nn.Module, size: int, cap: int, axis: int = 0) -> int:
    """The smallest tile that covers ``size`` with as few tiles as ``cap`` needs.

    Tiles that overhang the image waste work: for a 2048-pixel axis, 1148
    tiles (960-pixel steps) need three per axis, while 1212 tiles need two.
    """
    d = _divisor(model, axis)
    if model.padding == "same":
        overlap = _default_overlap(model, axis)
        extent = size + 2 * overlap
        n = max(1, -(-(extent - overlap) // _same_step(model, cap, overlap, axis)))
        tile = max(_round_up(-(-(extent + (n - 1) * overlap) // n), d), overlap + d)
        while (n - 1) * _same_step(model, tile, overlap, axis) + tile < extent:
            tile += d
        return min(cap, tile)
    step = max(d, _output_size(model, cap, axis) // d * d)
    n = max(1, -(-size // step))
    needed = _round_up(-(-size // n), d)
    return min(cap, _valid_size(model, needed, axis))


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _default_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return _CPU_BUDGET_BYTES


def _largest_valid_at_most(model: nn.Module, side: int, axis: int = 0) -> int:
    """Largest valid input size <= side, or the smallest useful one if none is."""
    d = _divisor(model, axis)
    smallest = _valid_size(model, d, axis)
    if side <= smallest:
        return smallest
    n = _valid_size(model, max(1, side - 2 * model.halo[axis]), axis)
    while n > side:
        n -= d
    return max(n, smallest)


def _context(model: nn.Module, axis: int = 0) -> int:
    contexts = getattr(model, "contexts", None)
    return int(contexts[axis]) if contexts is not None else int(model.context)


def _default_overlap(model: nn.Module, axis: int = 0) -> int:
    """Twice the network's context plus one, rounded to the divisor.

    Then every pixel of an overlap lies at least ``context`` pixels inside
    one of the two tiles, where zero padding at the tile edge cannot reach.
    """
    return _round_up(2 * _context(model, axis) + 1, _divisor(model, axis))


def _same_step(model: nn.Module, tile: int, overlap: int, axis: int = 0) -> int:
    d = _divisor(model, axis)
    return max(d, (tile - overlap) // d * d)


def _as_channels_first(model: nn.Module, image: np.ndarray) -> np.ndarray:
    """Validate an image and return it as (C, Y, X), or (C, Z, Y, X) for a 3D model."""
    image = np.asarray(image)
    channels = model.in_channels
    nd = _spatial_dims(model)
    axes = "Y, X" if nd == 2 else "Z, Y, X"
    expected = f"({axes}) or (1, {axes})" if channels == 1 else f"({channels}, {axes})"
    if image.dtype == np.bool_:
        image = image.view(np.uint8)
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(
            f"`image` has dtype {image.dtype}, expected a real numeric dtype "
            "(integer or floating point)"
        )
    received = image.shape
    if image.ndim == nd and channels == 1:
        image = image[np.newaxis]
    if image.ndim != nd + 1 or image.shape[0] != channels:
        hint = ""
        if nd == 2 and image.ndim >= 3 and channels == 1:
            hint = "; for a stack use predict_stack (or a 3D model, spatial_dims=3)"
        raise ValueError(
            f"`image` has shape {image.shape}, expected {expected} for a {nd}D model with "
            f"{channels} input channel{'s' if channels > 1 else ''}" + hint
        )
    if image.size == 0:
        raise ValueError(f"`image` of shape {received} is empty, expected {expected}")
    # Tiles are converted to float32 one at a time; the check runs on blocks of
    # rows so that it needs no image-sized temporary either.
    if image.dtype.kind == "f" or image.dtype.itemsize > 2:
        rows = max(1, 2**22 // max(1, math.prod(image.shape) // image.shape[1]))
        for y in range(0, image.shape[1], rows):
            if not np.isfinite(image[:, y : y + rows].astype(np.float32)).all():
                raise ValueError(
                    f"`image` of shape {received} contains NaN or infinite values; "
                    "replace them (e.g. np.nan_to_num) before predicting"
                )
    return image
