"""Where the channels of an image are: one rule for every front end.

A model with ``C`` input channels predicts images of shape ``(..., Y, X)``
with one axis of length ``C`` somewhere. The command line, the Predict
widget, the lazy napari layer and the chunked (Zarr) path all find that axis
with :func:`find_channel_axis` and move it just before ``(Y, X)`` with
:func:`move_channels`, which is what the tiling functions expect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["colour_to_channels", "find_channel_axis", "move_channels"]


def find_channel_axis(
    shape: Sequence[int], channels: int, channel_axis: int | None = None
) -> int | None:
    """The axis of ``shape`` that holds a model's ``channels`` input channels.

    Parameters
    ----------
    shape : sequence of int
        The image shape, ``(..., Y, X)`` with the channels anywhere but on
        ``Y`` (the last axis is allowed: colour and channels-last images).
    channels : int
        The model's input channels.
    channel_axis : int, optional
        The axis the user named; checked, not guessed.

    Returns
    -------
    axis : int or None
        Non-negative axis, or None for a one-channel model without a named axis.

    Raises
    ------
    ValueError
        If the named axis is out of range, is ``Y``, or has the wrong length,
        or no axis of ``channels`` entries exists.

    Notes
    -----
    The rule without a named axis: one channel means no channel axis; else
    the first axis before ``(Y, X)`` of length ``channels``; else the last
    axis if it has that length (channels last, e.g. RGB).

    Examples
    --------
    >>> find_channel_axis((5, 2, 64, 64), 2), find_channel_axis((64, 64, 3), 3)
    (1, 2)
    >>> find_channel_axis((64, 64), 1) is None
    True
    """
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    if ndim < 2:
        raise ValueError(f"an image of shape {shape} has no (Y, X) plane")
    if channel_axis is not None:
        if not -ndim <= channel_axis < ndim or ndim < 3 or channel_axis % ndim == ndim - 2:
            raise ValueError(
                f"channel axis {channel_axis} is not a channel axis of shape {shape}; the "
                "last two axes are (Y, X) (the last may hold channels)"
            )
        axis = channel_axis % ndim
        if shape[axis] != channels:
            raise ValueError(
                f"axis {channel_axis} of shape {shape} has {shape[axis]} entries, the model "
                f"expects {channels} channel(s); choose the channel axis"
            )
        return axis
    if channels == 1:
        return None
    candidates = [axis for axis in range(ndim - 2) if shape[axis] == channels]
    if candidates:
        return candidates[0]
    if ndim >= 3 and shape[-1] == channels:
        return ndim - 1
    raise ValueError(
        f"shape {shape} has no axis of {channels} channels, which the model expects; "
        "name the channel axis"
    )


def move_channels(array: Any, channel_axis: int | None) -> Any:
    """The array with its channel axis just before ``(Y, X)``: ``(..., C, Y, X)``.

    Works for NumPy and Dask arrays; ``None`` returns the array unchanged.
    If the channel axis is the last one, the (Y, X) axes are the two before it.
    """
    if channel_axis is None:
        return array
    if isinstance(array, np.ndarray):
        return np.moveaxis(array, channel_axis, -3)
    import dask.array as da

    return da.moveaxis(da.asarray(array), channel_axis, -3)


def colour_to_channels(image: np.ndarray, channels: int) -> tuple[np.ndarray, int | None]:
    """A ``(Y, X, 3|4)`` colour image (PNG, JPEG) arranged for a model.

    Parameters
    ----------
    image : ndarray, shape (Y, X, 3) or (Y, X, 4)
        Read from a colour file; an alpha channel is dropped.
    channels : int
        The model's input channels: 3 keeps the colours (channels last);
        1 accepts grey saved as colour (all three colours equal).

    Returns
    -------
    image : ndarray
    channel_axis : int or None

    Raises
    ------
    ValueError
        If the model wants another number of channels, or one channel but
        the colours differ.
    """
    colour = image[..., :3]
    if channels == 3:
        return colour, colour.ndim - 1
    if channels == 1 and (colour == colour[..., :1]).all():
        return colour[..., 0], None
    raise ValueError(
        f"a colour image (shape {image.shape}); the model expects {channels} channel(s)"
    )
