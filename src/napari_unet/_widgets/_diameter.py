"""The Predict dock's object diameter: typed, measured on a drawn line or painted cells.

The pipeline rescales an image so its objects have the model's training size
(:mod:`napari_unet.scale`); the user may leave that to the estimate, type the
diameter, or measure it here from what they drew over the image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Labels, Shapes

from ._layers import elide, to_world_vertices

__all__ = ["measure_diameter", "parse_diameter"]

_LINES = ("line", "path")


def parse_diameter(text: str) -> float | str | ValueError | None:
    """The object-diameter field: "" -> "default", "auto", "none" -> None, or pixels.

    Returns the ValueError (not raised) for text that is none of these.
    """
    value = (text or "").strip().lower()
    if value in ("", "default"):
        return "default"
    if value == "auto":
        return "auto"
    if value in ("none", "off", "0"):
        return None
    try:
        number = float(value.removesuffix("px").strip())
    except ValueError:
        number = -1.0
    if not number > 0 or number != number:
        return ValueError(
            f"object diameter {text!r} is not a number of pixels; leave it empty (automatic), "
            "type 'none' (no rescaling) or a diameter such as 25"
        )
    return number


def measure_diameter(layer: Any, image: Any) -> tuple[float, str]:
    """The objects' diameter in ``image``'s pixels, from a layer the user drew on.

    Parameters
    ----------
    layer : napari Shapes or Labels layer
        Shapes: the median length of its lines and paths, drawn across
        objects. Labels: the median equivalent diameter of its painted
        objects (:func:`napari_unet.scale.object_diameter`, plane by plane).
    image : napari Image layer
        The image to predict: lengths are converted to its pixels (layers
        with another scale or translation are measured in world units).

    Returns
    -------
    diameter : float
        Pixels of ``image``.
    source : str
        What was measured, for the status line (e.g. "2 lines in 'Shapes'").

    Raises
    ------
    ValueError
        If the layer holds nothing to measure; the message says what to draw.
    """
    from ..scale import line_diameter, object_diameter

    hint = (
        "select a Shapes layer with a line drawn across a cell, or a Labels layer with "
        "painted cells, then press Measure"
    )
    if image is None:
        raise ValueError("choose the image to predict first")
    if isinstance(layer, Shapes):
        lines = [
            to_world_vertices(layer, image, np.asarray(vertices, dtype=float))[:, -2:]
            for kind, vertices in zip(layer.shape_type, layer.data, strict=True)
            if kind in _LINES
        ]
        if not lines:
            raise ValueError(f"'{elide(layer.name)}' has no line or path: {hint}")
        diameter = line_diameter(lines)
        count = f"{len(lines)} line{'s' * (len(lines) > 1)}"
        return diameter, f"{count} in '{elide(layer.name)}'"
    if isinstance(layer, Labels):
        data = np.asarray(layer.data)
        planes = data.reshape(-1, *data.shape[-2:])
        diameter = object_diameter(planes)
        if not np.isfinite(diameter):
            raise ValueError(f"'{elide(layer.name)}' has no painted cell: {hint}")
        # Both layers' pixel sizes along X (napari's "scale"): labels may be coarser.
        ratio = float(layer.scale[-1]) / float(image.scale[-1])
        cells = int(sum(len(np.unique(p[p > 0])) for p in planes))
        source = f"{cells} painted cell{'s' * (cells > 1)} in '{elide(layer.name)}'"
        return diameter * ratio, source
    name = "no layer" if layer is None else f"'{elide(layer.name)}'"
    raise ValueError(f"{name} is selected: {hint}")
