"""Small helpers that translate between napari layers and the core's arrays.

napari keeps channels either as an RGB(A) last axis (``layer.rgb``) or, after
``channel_axis=`` on opening, as separate layers; a single layer can also
hold a channel axis that only the user knows about. The widgets therefore
let the user name the channel axis, and these helpers drop it from shapes,
scales and translations so that new layers line up with the image.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "GREY",
    "RGB",
    "add_in_background",
    "channel_axis_choices",
    "colour_for_model",
    "compact_labels",
    "connect_while_alive",
    "current_plane",
    "elide",
    "layers_of",
    "model_channel_choices",
    "resolve_channel_axis",
    "result_name",
    "spatial_transform",
    "unique_name",
]

#: Choice value meaning "the RGB(A) last axis of an rgb image layer".
RGB = "rgb"
#: Choice value meaning "an rgb image layer converted to one grey channel".
GREY = "grey"
#: Last words of an image name that already say what the labels hold.
_CELL_WORDS = ("cell", "cells", "nucleus", "nuclei")


def elide(name: str, limit: int = 40) -> str:
    """``name`` cut in the middle to ``limit`` characters (long file names in messages).

    A notification toast shows two or three lines: a 64-character file name
    would push the advice out of view.
    """
    if len(name) <= limit:
        return name
    keep = limit - 1
    return f"{name[: keep - keep // 3]}…{name[-(keep // 3) :]}"


def layers_of(viewer: Any, kind: type) -> list[tuple[str, Any]]:
    """``(name, layer)`` choices of one layer type, top layer first."""
    return [(layer.name, layer) for layer in reversed(viewer.layers) if isinstance(layer, kind)]


def layer_spacing(layer: Any) -> tuple[float, float, float]:
    """A layer's voxel spacing (Z, Y, X) from its scale, with the in-plane pixel as 1."""
    z, y, x = (float(s) for s in layer.scale[-3:])
    unit = min(y, x)
    return (z / unit, y / unit, x / unit)


def unique_name(viewer: Any, base: str) -> str:
    """``base``, or ``base (2)``, ``base (3)``, ... if that name is taken."""
    names = {layer.name for layer in viewer.layers}
    if base not in names:
        return base
    number = 2
    while f"{base} ({number})" in names:
        number += 1
    return f"{base} ({number})"


def channel_axis_choices(layer: Any) -> list[tuple[str, Any]]:
    """Channel-axis options for an image layer: none, RGB, or one of its leading axes."""
    if layer is None:
        return [("none (one channel)", None)]
    if getattr(layer, "rgb", False):
        return [(f"RGB ({layer.data.shape[-1]} channels)", RGB)]
    choices: list[tuple[str, Any]] = [("none (one channel)", None)]
    shape = layer.data.shape
    for axis in range(len(shape) - 2):
        choices.append((f"axis {axis} ({shape[axis]} channels)", axis))
    return choices


def model_channel_choices(layer: Any, channels: int | None) -> list[tuple[str, Any]]:
    """Channel options for ``layer`` that fit a model with ``channels`` inputs.

    An RGB(A) layer is offered as grey for a one-channel model and as its
    three colours (alpha dropped) for a three-channel one; other layers offer
    the leading axes with exactly ``channels`` entries. With nothing that
    fits, the plain choices are offered and Predict explains the mismatch.
    """
    if layer is None or channels is None:
        return channel_axis_choices(layer)
    shape = layer.data.shape
    if getattr(layer, "rgb", False):
        kind = "RGBA" if shape[-1] == 4 else "RGB"
        if channels == 1:
            return [(f"grey (converted from {kind})", GREY)]
        if channels == 3 or channels == shape[-1]:
            return [(f"{kind} ({channels} channels)", RGB)]
        return channel_axis_choices(layer)
    if channels == 1:
        return [("none (one channel)", None)]
    fitting = [
        (f"axis {axis} ({shape[axis]} channels)", axis)
        for axis in range(len(shape) - 2)
        if shape[axis] == channels
    ]
    return fitting or channel_axis_choices(layer)


def colour_for_model(data: Any, choice: Any, channels: int) -> tuple[Any, int | None]:
    """An RGB(A) array ``(..., Y, X, 3|4)`` as the model wants it: grey, or three colours.

    Grey saved as colour (all colours equal) keeps its values; other colours
    are mixed with the usual luminance weights (0.299, 0.587, 0.114).
    Works on NumPy and Dask arrays.

    Returns
    -------
    data : array
    channel_axis : int or None
    """
    colour = data[..., :3]
    if choice != GREY:
        return (colour if channels == 3 else data), data.ndim - 1
    if isinstance(colour, np.ndarray) and (colour == colour[..., :1]).all():
        return colour[..., 0], None
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return (colour * weights).sum(axis=-1, dtype=np.float32), None


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """``labels`` as uint16 when every id fits, else unchanged.

    napari re-maps labels wider than 16 bits for its texture on the GUI
    thread (a pass over every pixel whenever the layer is drawn anew: about
    0.2 s of a 2048 x 2048 result under load); uint16 is used as it is.
    Called in the worker, so the GUI thread only adds the layer.
    """
    if labels.dtype.kind not in "ui" or labels.dtype.itemsize <= 2 or labels.size == 0:
        return labels
    if labels.min() < 0 or labels.max() >= 2**16:
        return labels
    return labels.astype(np.uint16)


def result_name(image_name: str, what: str = "cells (predicted)") -> str:
    """A result layer's name without repetition.

    "<image> cells (predicted)", but "synthetic cells (predicted)" rather
    than "synthetic cells cells (predicted)".
    """
    words = image_name.lower().split()
    if words and words[-1] in _CELL_WORDS and what.split()[0] in ("cells", "cell"):
        rest = what.split(" ", 1)[1] if " " in what else ""
        return f"{image_name} {rest}".strip()
    return f"{image_name} {what}"


def resolve_channel_axis(layer: Any, choice: Any) -> int | None:
    """The axis of ``layer.data`` that holds channels, or None.

    For an RGB(A) layer that is its colour axis, also when the colours are
    converted to grey for the model (see :func:`colour_for_model`).
    """
    if choice in (RGB, GREY) or getattr(layer, "rgb", False):
        return layer.data.ndim - 1
    return None if choice is None else int(choice)


def spatial_transform(layer: Any, channel_axis: int | None) -> dict[str, tuple[float, ...]]:
    """``scale`` and ``translate`` for a layer aligned with ``layer`` minus its channel axis.

    For an RGB layer napari's scale already has no entry for the colour
    axis; for a user-chosen channel axis the entry is dropped.
    """
    scale = tuple(float(s) for s in layer.scale)
    translate = tuple(float(t) for t in layer.translate)
    if channel_axis is not None and not getattr(layer, "rgb", False) and len(scale) > 2:
        scale = scale[:channel_axis] + scale[channel_axis + 1 :]
        translate = translate[:channel_axis] + translate[channel_axis + 1 :]
    return {"scale": scale, "translate": translate}


def spatial_shape(layer: Any, channel_axis: int | None) -> tuple[int, ...]:
    """Shape of ``layer.data`` without its channel axis."""
    shape = tuple(int(s) for s in layer.data.shape)
    if channel_axis is None:
        return shape
    return shape[:channel_axis] + shape[channel_axis + 1 :]


def current_plane(viewer: Any, layer: Any) -> tuple[int, ...]:
    """Index along the leading axes of ``layer`` of the plane the viewer shows.

    Uses the public world-to-data transform, so layers with their own scale
    or translation (a stack with 2 µm between planes) map correctly.
    """
    ndim = layer.ndim
    if ndim <= 2:
        return ()
    point = np.asarray(viewer.dims.point)[-ndim:]
    data = np.asarray(layer.world_to_data(point))
    shape = layer.data.shape
    return tuple(int(np.clip(np.round(data[i]), 0, shape[i] - 1)) for i in range(ndim - 2))


def add_in_background(viewer: Any, add: Callable[[], Any]) -> Any:
    """``add()`` a layer to ``viewer`` without making it the active layer.

    napari activates every new layer: a preview added while the user paints
    would take the brush away from their labels layer, and switching the
    layer controls to the new layer is part of the GUI stall of adding it
    (pick of a 2048² labels layer at load 2: 171-194 ms with napari's
    switch turned off, 256-261 ms when the active layer is restored after).
    Returns what ``add()`` returns.
    """
    layers = viewer.layers
    switch = _private(layers, "_activate_on_insert")
    if switch is None:  # a napari without the switch: restore the active layer after
        active = layers.selection.active
        added = add()
        if active is not None and active in layers:
            layers.selection.active = active
        return added
    _private(layers, "_activate_on_insert", False)
    try:
        return add()
    finally:
        _private(layers, "_activate_on_insert", switch)


def _private(obj: Any, name: str, value: Any = None) -> Any:
    """Read (or set, given ``value``) napari's private ``obj.name``; None when it has none.

    napari warns (FutureWarning) that plugins lose private access in 0.10;
    the caller then falls back to public calls, so the warning is not shown.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if value is not None:
            setattr(obj, name, value)
            return value
        try:
            return getattr(obj, name, None)
        except Exception:  # noqa: BLE001 - a napari that refuses private access
            return None


def on_layer_list_change(viewer: Any, callback: Callable[..., Any]) -> None:
    """Call ``callback`` whenever a layer is added, removed or renamed.

    The layer choices of a docked widget go stale otherwise.
    """
    for event in (
        viewer.layers.events.inserted,
        viewer.layers.events.removed,
        viewer.layers.events.renamed,
    ):
        event.connect(callback)


def connect_while_alive(
    signal: Any, callback: Callable[..., Any], alive: Callable[[], bool]
) -> Callable[..., Any]:
    """Connect ``callback`` to a napari/psygnal signal, skipping calls once ``alive()`` is False.

    Widgets outlive their Qt widgets by a little when a dock is closed; the
    guard keeps late events from touching deleted Qt objects.
    """

    def guarded(*args: Any) -> None:
        if alive():
            callback(*args)

    signal.connect(guarded)
    return guarded


def to_world_vertices(shapes_layer: Any, target_layer: Any, vertices: np.ndarray) -> np.ndarray:
    """Vertices of a shape in ``shapes_layer`` data coordinates -> ``target_layer`` data coords."""
    world = np.array([shapes_layer.data_to_world(v) for v in vertices])
    return np.array([target_layer.world_to_data(w) for w in world])


def rectangles_for(shapes_layer: Any, target_layer: Any) -> Sequence[np.ndarray]:
    """All shapes of ``shapes_layer`` as vertex arrays in ``target_layer`` pixel coordinates."""
    out = []
    for vertices in shapes_layer.data:
        converted = to_world_vertices(shapes_layer, target_layer, np.asarray(vertices))
        if shapes_layer.ndim < target_layer.ndim:
            converted = converted[:, -2:]  # a 2D region applies to every plane
        out.append(converted)
    return out
