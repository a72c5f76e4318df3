"""Object size: measure it, and rescale images so objects have the model's size.

A network learns objects of the sizes it was trained on. Nuclei twice as
large as the training nuclei come out in fragments; half as large, merged or
missed. Cellpose's ``diameter`` and StarDist's ``scale`` exist for this: the
image is rescaled so its objects have the training size, the network runs at
that scale and the result is mapped back to the image's own pixels.

Every model file records the typical object diameter of its training labels
(metadata key ``object_diameter``, pixels; see :func:`object_diameter`).
:func:`scale_factor` turns a diameter measured on a new image into the zoom
for :func:`rescale_image`; :func:`restore_probabilities` and
:func:`restore_labels` map the results back onto the original grid, aligned
pixel centre to pixel centre. :func:`estimate_diameter` guesses the diameter
of an image's objects with the model itself (``diameter="auto"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "choose_zoom",
    "estimate_diameter",
    "line_diameter",
    "object_confidence",
    "object_diameter",
    "predict_at_diameter",
    "predict_rescaled",
    "rescale_image",
    "restore_labels",
    "restore_probabilities",
    "scale_factor",
    "zoom_passes",
]

# Zooms closer to 1 than this leave the image as it is: resampling would blur
# it for no gain (a 5 % size mismatch is well within what training covers).
_NO_RESCALE = 0.05


def object_diameter(labels: np.ndarray) -> float:
    """Median equivalent diameter of the instances in a label image.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X) or (Z, Y, X)
        Instances, 0 = background. A (Z, Y, X) stack is measured plane by
        plane (2D diameters of the objects' cross-sections).

    Returns
    -------
    diameter : float
        Median over the objects (over all planes for a stack) of the diameter
        of the disc with the object's area, ``sqrt(4 * area / pi)``, in
        pixels; ``nan`` when there are no objects.

    Examples
    --------
    >>> labels = np.zeros((40, 40), dtype=int)
    >>> labels[5:15, 5:15] = 1  # area 100: diameter 11.28
    >>> round(object_diameter(labels), 2)
    11.28
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f"`labels` (shape {labels.shape}) must be (Y, X) or (Z, Y, X)")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise ValueError(f"`labels` must be integer instance ids, got dtype {labels.dtype}")
    planes = labels if labels.ndim == 3 else labels[np.newaxis]
    areas = []
    for plane in planes:
        flat = plane.ravel()
        if flat.size and flat.min() < 0:
            raise ValueError("`labels` must be >= 0 (0 = background)")
        counts = np.bincount(flat.astype(np.int64, copy=False))[1:]
        areas.append(counts[counts > 0])
    areas = np.concatenate(areas) if areas else np.zeros(0)
    if areas.size == 0:
        return math.nan
    return float(np.median(np.sqrt(4.0 * areas / math.pi)))


def line_diameter(lines: Sequence[np.ndarray]) -> float:
    """Median length of lines drawn across objects, for a typed diameter.

    A user who knows the objects draws a line across one (or several) of
    them; this is the diameter the prediction pipeline then uses.

    Parameters
    ----------
    lines : sequence of ndarray of float, each shape (V, 2)
        Each line's vertices (V >= 2) in (Y, X) pixel coordinates of the
        image; a polyline's length is the sum of its segments.

    Returns
    -------
    diameter : float
        Median of the lines' lengths, in pixels.

    Raises
    ------
    ValueError
        If there is no line with two distinct vertices, or a line is not
        (V, 2).

    Examples
    --------
    >>> round(line_diameter([np.array([[0.0, 0.0], [3.0, 4.0]])]), 1)
    5.0
    """
    lengths = []
    for line in lines:
        vertices = np.asarray(line, dtype=float)
        if vertices.ndim != 2 or vertices.shape[1] != 2:
            raise ValueError(f"a line must be (V, 2) (Y, X) vertices, got shape {vertices.shape}")
        length = float(np.sum(np.hypot(*np.diff(vertices, axis=0).T)))
        if length > 0 and np.isfinite(length):
            lengths.append(length)
    if not lengths:
        raise ValueError("no line to measure: draw a line across an object (two points)")
    return float(np.median(lengths))


def object_confidence(probs: np.ndarray, labels: np.ndarray) -> float:
    """How sure the network is of the objects it found: their mean object probability.

    Parameters
    ----------
    probs : ndarray of float, shape (num_classes, Y, X)
        Class probabilities; class 1 is the object (cell interior) class.
    labels : ndarray of int, shape (Y, X)
        The instances made from ``probs``, 0 = background.

    Returns
    -------
    confidence : float
        Mean over the objects of the mean class-1 probability inside each,
        in [0, 1]; ``nan`` when there are no objects. Objects cut into
        fragments, or blurred beyond the sizes the network was trained on,
        come out less sure than whole objects of a familiar size.
    """
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    if probs.ndim != labels.ndim + 1 or probs.shape[1:] != labels.shape:
        raise ValueError(
            f"`probs` (shape {probs.shape}) must be `labels` (shape {labels.shape}) "
            "with a leading class axis"
        )
    ids = labels.ravel().astype(np.int64, copy=False)
    if ids.size == 0 or ids.max() <= 0:
        return math.nan
    cell = probs[1 if probs.shape[0] > 1 else 0].ravel().astype(np.float64, copy=False)
    sums = np.bincount(ids, weights=cell)[1:]
    counts = np.bincount(ids)[1:]
    found = counts > 0
    return float(np.mean(sums[found] / counts[found]))


def scale_factor(
    diameter: float | None,
    model_diameter: float | None,
    size_range: tuple[float, float] | None = None,
) -> float:
    """Zoom that gives objects of ``diameter`` pixels the model's training size.

    Parameters
    ----------
    diameter : float or None
        Typical object diameter in the image (pixels); None: no rescaling.
    model_diameter : float or None
        The model's ``object_diameter`` (pixels); None (a model file that
        does not record it): no rescaling.
    size_range : (float, float), optional
        Diameters the model was trained on (its ``object_diameter_range``):
        objects within it are predicted at their own size, others zoomed to
        ``model_diameter``.

    Returns
    -------
    factor : float
        ``model_diameter / diameter``, or exactly 1.0 when either is None or
        the factor is within 5 % of 1.
    """
    if diameter is None or model_diameter is None:
        return 1.0
    if not (diameter > 0 and math.isfinite(diameter)):
        raise ValueError(
            f"`diameter` must be a positive number of pixels, got {diameter!r}; "
            "pass None for no rescaling or 'auto' to estimate it"
        )
    if not (model_diameter > 0 and math.isfinite(model_diameter)):
        raise ValueError(f"the model's object_diameter must be positive, got {model_diameter!r}")
    if size_range is not None and size_range[0] <= diameter <= size_range[1]:
        return 1.0
    factor = float(model_diameter) / float(diameter)
    return 1.0 if abs(factor - 1.0) < _NO_RESCALE else factor


def _scaled_shape(shape: Sequence[int], factor: float) -> tuple[int, ...]:
    return tuple(max(1, round(s * factor)) for s in shape)


def _resize(array: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """Resample the trailing ``len(shape)`` axes to ``shape`` (pixel centres aligned).

    Output pixel ``i`` samples the input at ``(i + 0.5) * in / out - 0.5``:
    the convention of skimage.transform.resize and of PyTorch's
    ``align_corners=False``, so an object keeps its centre when zoomed.
    Downsampling with ``order >= 1`` first smooths (Gaussian, sigma
    ``(1 / factor - 1) / 2``) so fine texture does not alias.
    """
    spatial = len(shape)
    in_shape = array.shape[-spatial:]
    lead = array.shape[:-spatial]
    if tuple(in_shape) == tuple(shape):
        return array
    scales = [i / o for i, o in zip(in_shape, shape, strict=True)]
    if order > 0:
        sigma = [0.0] * len(lead) + [max(0.0, (s - 1.0) / 2.0) for s in scales]
        if any(sigma):
            array = ndi.gaussian_filter(array, sigma, mode="mirror")
    grids = [(np.arange(o) + 0.5) * s - 0.5 for o, s in zip(shape, scales, strict=True)]
    coords = np.meshgrid(*grids, indexing="ij")
    flat = array.reshape(-1, *in_shape)
    out = np.empty((flat.shape[0], *shape), dtype=array.dtype)
    for k, part in enumerate(flat):
        out[k] = ndi.map_coordinates(part, coords, order=order, mode="nearest")
    return out.reshape(*lead, *shape)


def rescale_image(
    image: np.ndarray, factor: float, *, spatial_dims: int = 2, order: int = 1
) -> np.ndarray:
    """Zoom the last ``spatial_dims`` axes of an image by ``factor``.

    Parameters
    ----------
    image : ndarray, shape (..., Y, X)
        Leading axes (channels, planes) are kept; each is resampled alike.
    factor : float
        Zoom (> 0); the new size is ``round(size * factor)`` per axis.
    spatial_dims : int
        Trailing axes to zoom (2: Y and X; Z is never zoomed for 2D models).
    order : int
        Interpolation: 1 linear (images, probabilities), 0 nearest (labels).

    Returns
    -------
    rescaled : ndarray
        Float32 for ``order >= 1`` (the input dtype for ``order=0``).
    """
    image = np.asarray(image)
    if not (factor > 0 and math.isfinite(factor)):
        raise ValueError(f"`factor` must be a positive number, got {factor!r}")
    if image.ndim < spatial_dims:
        raise ValueError(f"`image` (shape {image.shape}) has fewer than {spatial_dims} axes")
    if factor == 1.0:
        return image
    shape = _scaled_shape(image.shape[-spatial_dims:], factor)
    if order > 0:
        image = image.astype(np.float32, copy=False)
    return _resize(image, shape, order)


def restore_probabilities(probs: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resample probabilities predicted on a rescaled image back to ``shape``.

    Parameters
    ----------
    probs : ndarray of float, shape (num_classes, ..., Y', X')
    shape : (Y, X)
        The original image's spatial shape.

    Returns
    -------
    probs : ndarray of float32, shape (num_classes, ..., Y, X)
        Linear interpolation (no smoothing: class maps are already smooth),
        renormalised so the classes still sum to 1 per pixel.
    """
    shape = tuple(int(s) for s in shape)
    probs = np.asarray(probs, dtype=np.float32)
    if tuple(probs.shape[-len(shape) :]) == shape:
        return probs
    out = _resize(probs, shape, order=1)
    np.clip(out, 0.0, 1.0, out=out)
    total = out.sum(axis=0, keepdims=True)
    return out / np.maximum(total, 1e-12)


def restore_labels(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resample labels made on a rescaled image back to ``shape`` (nearest, ids kept)."""
    shape = tuple(int(s) for s in shape)
    return _resize(np.asarray(labels), shape, order=0)


def predict_rescaled(
    predict: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    factor: float,
    *,
    spatial_dims: int = 2,
) -> np.ndarray:
    """Predict on the image zoomed by ``factor``; probabilities at the original size.

    Parameters
    ----------
    predict : callable
        ``predict(image) -> probs``: the network on a (normalised) image of
        shape (..., Y', X'), returning (num_classes, ..., Y', X').
    image : ndarray, shape (..., Y, X)
        The normalised image (channels, if any, on a leading axis).
    factor : float
        Zoom (:func:`scale_factor`); 1.0 predicts the image as it is.
    spatial_dims : int
        Trailing axes zoomed (2: Y, X).

    Returns
    -------
    probs : ndarray of float32, shape (num_classes, ..., Y, X)
        Aligned with ``image`` pixel for pixel.
    """
    if factor == 1.0:
        return np.asarray(predict(image), dtype=np.float32)
    shape = image.shape[-spatial_dims:]
    probs = predict(rescale_image(image, factor, spatial_dims=spatial_dims))
    return restore_probabilities(probs, shape)


def estimate_diameter(
    predict: Callable[[np.ndarray], np.ndarray],
    label: Callable[[np.ndarray, float], np.ndarray],
    image: np.ndarray,
    model_diameter: float,
    *,
    factors: Sequence[float] = (0.25, 0.5, 1.0),
    min_objects: int = 3,
    max_side: int | None = 512,
    plausible: tuple[float, float] = (0.5, 2.5),
) -> dict[str, Any]:
    """Estimate the typical object diameter of an image with the model itself.

    The model runs on the image zoomed by each of ``factors``; at each zoom
    the objects it finds are measured (:func:`object_diameter`, converted to
    the image's own pixels). The coarsest zoom at which the objects come out
    with a plausible size for the model (``plausible`` times its training
    size, as the model sees them) is trusted: a network shown objects much
    larger than it was trained on cuts them into fragments of about its own
    size, which at a finer zoom could pass for whole objects, while at a
    coarse zoom whole objects of a plausible size are not fragments. When no
    zoom gives a plausible size, the one closest to the training size (in
    log scale) is trusted. One more pass at the zoom that the measurement
    implies refines it; small objects (below half the training size) are
    measured there, upscaled. When no zoom finds ``min_objects`` objects,
    one more pass at twice the largest zoom looks for objects too small to
    be seen.

    Parameters
    ----------
    predict : callable
        ``predict(image) -> probs`` (see :func:`predict_rescaled`).
    label : callable
        ``label(probs, factor) -> labels``: the model's post-processing of
        probabilities predicted at zoom ``factor`` and restored to the
        image's size (``factor`` lets it scale its size thresholds).
    image : ndarray, shape (..., Y, X)
        The normalised image.
    model_diameter : float
        The model's ``object_diameter`` (pixels).
    factors : sequence of float
        First-pass zooms. The default suits objects from about a quarter
        (through the refining pass) to ten times the training size, for a
        third of the cost of also predicting at zoom 2.
    min_objects : int
        Zooms that find fewer objects are not trusted (unless none finds more).
    plausible : (float, float)
        Object sizes, as the model sees them, relative to its training size,
        that a zoom may be trusted with.
    max_side : int, optional
        Each pass looks at the central part of the image that is at most
        this many pixels wide once zoomed (objects cut by its edges are not
        measured), so a pass costs no more than a ``max_side`` square;
        None: the whole image at every zoom.

    Returns
    -------
    result : dict
        ``diameter`` (float, pixels of ``image``; ``nan`` when no zoom found
        an object), ``factor`` (the zoom it implies, 1.0 when unknown),
        ``passes``: one ``{"factor", "objects", "diameter", "confidence"}``
        per pass (:func:`object_confidence` of its objects, on the zoomed
        grid the network predicted on), and
        ``probabilities``: ``{factor: probs}`` (restored to the image's size)
        for the passes that saw the whole image, so the caller need not
        predict again at one of these zooms.
    """
    if not (model_diameter > 0 and math.isfinite(model_diameter)):
        raise ValueError(f"`model_diameter` must be positive, got {model_diameter!r}")
    passes: list[dict[str, float]] = []
    whole: dict[float, np.ndarray] = {}

    def measure(factor: float) -> dict[str, float]:
        found = _measure_pass(predict, label, image, factor, max_side, whole)
        passes.append(found)
        return found

    for factor in factors:
        measure(float(factor))
    if factors and not any(p["objects"] >= min_objects for p in passes):
        measure(2.0 * max(factors))  # objects too small to be found: look closer
    usable = [p for p in passes if p["objects"] >= min_objects] or [
        p for p in passes if p["objects"] > 0
    ]
    if not usable:
        return {"diameter": math.nan, "factor": 1.0, "passes": passes, "probabilities": whole}

    def mismatch(p: dict[str, float]) -> float:
        # The diameter measured at the original size is p["diameter"]; the
        # model saw objects of p["diameter"] * p["factor"] pixels.
        return abs(math.log(p["diameter"] * p["factor"] / model_diameter))

    low, high = plausible
    sized = [p for p in usable if low <= p["diameter"] * p["factor"] / model_diameter <= high]
    best = min(sized, key=lambda p: p["factor"]) if sized else min(usable, key=mismatch)
    refined = model_diameter / best["diameter"]
    if min(abs(math.log(refined / p["factor"])) for p in passes) > 0.1:
        again = measure(refined)
        if again["objects"] >= min(min_objects, best["objects"]) and mismatch(again) < mismatch(
            best
        ):
            best = again
    diameter = float(best["diameter"])
    return {
        "diameter": diameter,
        "factor": model_diameter / diameter,
        "passes": passes,
        "probabilities": whole,
    }


def zoom_passes(
    predict: Callable[[np.ndarray], np.ndarray],
    label: Callable[[np.ndarray, float], np.ndarray],
    image: np.ndarray,
    factors: Sequence[float],
    *,
    max_side: int | None = 512,
) -> dict[str, Any]:
    """Predict at each zoom and measure what the network found: passes for :func:`choose_zoom`.

    :func:`estimate_diameter` without the estimate, for a diameter the user
    typed: the typed size gives the zoom, and the passes let
    :func:`choose_zoom` check the network's confidence there against zoom 1.

    Parameters
    ----------
    predict, label, image, max_side
        As for :func:`estimate_diameter`.
    factors : sequence of float
        The zooms.

    Returns
    -------
    result : dict
        ``passes`` and ``probabilities``, as :func:`estimate_diameter` returns them.
    """
    whole: dict[float, np.ndarray] = {}
    passes = [_measure_pass(predict, label, image, float(f), max_side, whole) for f in factors]
    return {"passes": passes, "probabilities": whole}


def _measure_pass(
    predict: Callable[[np.ndarray], np.ndarray],
    label: Callable[[np.ndarray, float], np.ndarray],
    image: np.ndarray,
    factor: float,
    max_side: int | None,
    whole: dict[float, np.ndarray],
) -> dict[str, float]:
    """One pass at one zoom: objects found, their diameter and the network's confidence."""
    view, cropped = _central_crop(image, max_side, factor)
    seen = np.asarray(predict(rescale_image(view, factor)), dtype=np.float32)
    probs = restore_probabilities(seen, view.shape[-2:])
    if not cropped:
        whole[factor] = probs
    labels = label(probs, factor)
    if cropped:  # objects cut by the crop would look small
        from skimage.segmentation import clear_border

        labels = clear_border(labels)
    count = int(len(np.unique(labels)) - (1 if (labels == 0).any() else 0))
    # Confidence on the grid the network predicted on: on the image's own grid an
    # object's uncertain rim would be 1 / factor pixels wide, penalising small zooms.
    confidence = object_confidence(seen, restore_labels(labels, seen.shape[-2:]))
    return {
        "factor": factor,
        "objects": count,
        "diameter": object_diameter(labels),
        "confidence": confidence,
    }


def choose_zoom(
    estimate: dict[str, Any],
    model_diameter: float,
    size_range: tuple[float, float] | None = None,
    *,
    min_objects: int = 3,
    plausible: tuple[float, float] = (0.5, 2.5),
) -> float:
    """The zoom to predict at, from :func:`estimate_diameter`'s or :func:`zoom_passes`' passes.

    Objects smaller than the model's trained range are zoomed up to the
    training size (:func:`scale_factor`). Otherwise the image is shrunk only
    when the network is surer of the objects it found at a smaller zoom:
    among the estimate's passes at zooms below 1 that found ``min_objects``
    objects of a plausible size for the model (``plausible`` times its
    training size, as the model saw them), the one with the highest
    :func:`object_confidence` (measured on the grid the network predicted
    on, the pass's ``"confidence"``) is chosen if it beats the pass at zoom 1;
    else the image is predicted at its own size. The diameter alone cannot
    tell objects the network knows at their size (the DSB images' own 45 px
    nuclei) from objects it reads better shrunk (small nuclei upsampled, so
    blurred; nuclei several times the training size, cut into fragments);
    the network's confidence can. Upscaled passes are not compared: their
    interpolated probabilities look surer than they are.

    Parameters
    ----------
    estimate : dict
        The result of :func:`estimate_diameter` (``diameter="auto"``), or
        :func:`zoom_passes`' with the typed ``diameter`` added.
    model_diameter : float
        The model's ``object_diameter`` (pixels).
    size_range : (float, float), optional
        The model's ``object_diameter_range``.
    min_objects, plausible
        As for :func:`estimate_diameter`.

    Returns
    -------
    factor : float
        The zoom; one of the passes' zooms when within 10 % of it, so the
        estimate's prediction at that zoom can be reused.
    """
    diameter = estimate["diameter"]
    passes = estimate["passes"]
    if not math.isfinite(diameter):
        return 1.0
    factor = scale_factor(diameter, model_diameter, size_range)
    at_one = [p for p in passes if p["factor"] == 1.0 and "confidence" in p]
    if factor <= 1.0 and at_one:
        low, high = plausible
        shrunk = [
            p
            for p in passes
            if p["factor"] < 1.0 - _NO_RESCALE
            and p["objects"] >= min_objects
            and low <= p["diameter"] * p["factor"] / model_diameter <= high
            and math.isfinite(p["confidence"])
        ]
        best = max(shrunk, key=lambda p: p["confidence"], default=None)
        sure = at_one[0]["confidence"]
        beaten = best is not None and not (math.isfinite(sure) and sure >= best["confidence"])
        return float(best["factor"]) if beaten else 1.0
    # A zoom within 10 % of one already tried is that one: no extra pass for a 10 % change.
    near = min((p["factor"] for p in passes), key=lambda f: abs(math.log(f / factor)), default=1.0)
    return float(near) if abs(math.log(near / factor)) < 0.1 else factor


def _central_crop(
    image: np.ndarray, max_side: int | None, factor: float
) -> tuple[np.ndarray, bool]:
    if max_side is None:
        return image, False
    side = max(1, math.ceil(max_side / factor))
    index = []
    for size in image.shape[-2:]:
        start = max(0, (size - side) // 2)
        index.append(slice(start, start + side))
    view = image[(..., *index)]
    return view, view.shape != image.shape


def predict_at_diameter(
    predict: Callable[[np.ndarray], np.ndarray],
    label: Callable[[np.ndarray, float], np.ndarray],
    image: np.ndarray,
    *,
    model_diameter: float | None,
    diameter: float | str | None = "auto",
    size_range: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The diameter step of the pipeline: predict at the model's object size.

    Parameters
    ----------
    predict, label : callable
        As for :func:`estimate_diameter`.
    image : ndarray, shape (..., Y, X)
        The normalised image.
    model_diameter : float or None
        The model's ``object_diameter``; None (older model files): the image
        is predicted as it is, whatever ``diameter`` says.
    diameter : float, "auto" or None
        Typical object diameter in the image, pixels; ``"auto"``: estimated
        (:func:`estimate_diameter`); None: no rescaling.
    size_range : (float, float), optional
        The model's ``object_diameter_range`` (:func:`scale_factor`): objects
        within it are predicted at their own size, as the pipeline does.

    Returns
    -------
    probs : ndarray of float32, (num_classes, ..., Y, X)
        At the image's size.
    labels : ndarray
        ``label(probs, factor)``.
    info : dict
        ``diameter`` (the value used, pixels, or None), ``factor`` (the zoom
        predicted at), ``estimated`` (True for ``"auto"``) and, when
        estimated, ``passes``.
    """
    info: dict[str, Any] = {"diameter": None, "factor": 1.0, "estimated": False}
    if isinstance(diameter, str) and diameter != "auto":
        raise ValueError(
            f"`diameter` must be a number of pixels, 'auto' or None, got {diameter!r}"
        )
    factor, seen = 1.0, None
    if model_diameter is not None and diameter == "auto":
        found = estimate_diameter(predict, label, image, model_diameter)
        info.update(estimated=True, passes=found["passes"])
        if math.isfinite(found["diameter"]):
            factor = choose_zoom(found, model_diameter, size_range)
            seen = found["probabilities"].get(factor)
            info["diameter"] = round(found["diameter"], 2)
    elif model_diameter is not None and diameter is not None:
        factor = scale_factor(float(diameter), model_diameter, size_range)
        info["diameter"] = float(diameter)
    info["factor"] = factor
    probs = seen if seen is not None else predict_rescaled(predict, image, factor)
    return probs, label(probs, factor), info
