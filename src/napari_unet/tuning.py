"""Post-processing chosen on validation data, stored in the model file.

A network's probabilities are only half of a segmentation: the threshold,
connected components or seeded watershed, the seed threshold and the
minimum object size decide what a user gets. The best settings differ from
model to model (a class-balanced loss makes a model generous with
foreground; a membrane model's cells are best taken as connected
components, where a watershed cuts them along straight lines), so they are
chosen on the model's own validation images, maximising the task's metric,
and stored in the model's metadata (key ``postprocessing``). Every front end
then uses them by default (:func:`postprocessing_options`).

Metrics: ``"dsb"`` (the Data Science Bowl 2018 score, mean AP over IoU 0.5 to
0.95, mean over images), ``"ap50"`` (AP at IoU 0.5, mean over images),
``"rand"`` and ``"pixel"`` (ISBI 2012 Rand and pixel errors of the labels,
counts pooled over the images), ``"isbi"`` (their sum: the challenge reports
both, and a choice for one alone gives up the other, e.g. a low threshold
that closes every membrane gap but makes membranes too thin).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .metrics import (
    _pixel_counts,
    _pixel_error_from_counts,
    _rand_counts,
    _rand_from_counts,
    average_precision,
)
from .postprocess import probabilities_to_labels

__all__ = [
    "METRICS",
    "choose_postprocessing",
    "postprocessing_options",
    "scaled_sizes",
    "score_labels",
]

METRICS = ("dsb", "ap50", "rand", "pixel", "isbi")
_ERRORS = ("rand", "pixel", "isbi")
# Settings passed on to probabilities_to_labels; the others in the stored
# dict (metric, score, ...) are a record of how they were chosen.
_OPTIONS = (
    "method",
    "threshold",
    "seed_threshold",
    "min_size",
    "min_seed_size",
    "seed_erosion",
    "split_depth",
)
# Sizes are areas in pixels of the model's scale: they scale with zoom**2.
_AREAS = ("min_size", "min_seed_size")
# ... and lengths with zoom.
_LENGTHS = ("seed_erosion",)
_COARSE = tuple(round(float(t), 2) for t in np.arange(0.2, 0.91, 0.05))
# Seeded growth: the foreground may reach far into uncertain membrane (the
# seeds keep cells apart), so its threshold is searched low as well.
_LOW = (0.02, 0.03, 0.05, 0.1, 0.15)
_SEEDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def score_labels(
    truths: Sequence[np.ndarray], predictions: Sequence[np.ndarray], metric: str
) -> float:
    """One metric of label images against the truth, over all images.

    Parameters
    ----------
    truths, predictions : sequence of ndarray of int, each (Y, X)
        True and predicted instances, 0 = background.
    metric : {"dsb", "ap50", "rand", "pixel", "isbi"}
        ``"dsb"``/``"ap50"``: mean over images of the DSB 2018 score / AP at
        IoU 0.5; ``"rand"``/``"pixel"``: the ISBI 2012 Rand / pixel error with
        counts pooled over the images; ``"isbi"``: their sum.

    Returns
    -------
    value : float
        The score (higher is better) or the error (lower is better).
    """
    if metric not in METRICS:
        raise ValueError(f"`metric` must be one of {METRICS}, got {metric!r}")
    values, pairs, pixels = [], np.zeros(3), np.zeros(3)
    for truth, pred in zip(truths, predictions, strict=True):
        if metric in ("dsb", "ap50"):
            kwargs = {"thresholds": (0.5,)} if metric == "ap50" else {}
            values.append(average_precision(truth, pred, **kwargs)["mean_ap"])
            continue
        if metric in ("rand", "isbi"):
            pairs += _rand_counts(truth, pred)
        if metric in ("pixel", "isbi"):
            pixels += _pixel_counts(truth != 0, pred != 0)
    if metric in ("dsb", "ap50"):
        return float(np.mean(values))
    rand = float(_rand_from_counts(*pairs)["rand_error"])
    pixel = float(_pixel_error_from_counts(*pixels))
    return {"rand": rand, "pixel": pixel, "isbi": rand + pixel}[metric]


def _score(
    probabilities: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    options: dict[str, Any],
    metric: str,
) -> float:
    """The metric of one setting over all images; larger is better."""
    preds = [probabilities_to_labels(p, spatial_dims=2, **options) for p in probabilities]
    value = score_labels(truths, preds, metric)
    return -value if metric in _ERRORS else value


def choose_postprocessing(
    probabilities: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    metric: str = "dsb",
    methods: Sequence[str] | None = None,
    thresholds: Sequence[float] = _COARSE,
    progress: Callable[[int, int], Any] | None = None,
) -> dict[str, Any]:
    """Search the post-processing settings that score best on validation images.

    Coordinate search, each step keeping the best so far: for each method,
    the foreground threshold; then (watershed) the seed threshold of three-
    class models or the split depth of two-class ones, (seeded) the seed
    threshold and minimum seed size; then the minimum object (and seed)
    size; then the threshold again, finely, around the best. Ties keep the
    earlier (simpler, default-like) setting.

    Parameters
    ----------
    probabilities : sequence of ndarray of float, each (num_classes, Y, X)
        The model's probabilities on the validation images (at the scale it
        predicts them: size thresholds are in those pixels).
    labels : sequence of ndarray of int, each (Y, X)
        Their true instances (0 = background); for ``"rand"``/``"pixel"``/
        ``"isbi"`` the ISBI cells (4-connected components of the cell class).
    metric : {"dsb", "ap50", "rand", "pixel", "isbi"}
        What to maximise (errors are minimised).
    methods : sequence of {"watershed", "components", "seeded"}, optional
        Methods to try; default all three for two-class (membrane) models,
        ``"watershed"`` and ``"components"`` for three-class ones (whose
        watershed is already seeded).
    thresholds : sequence of float
        Coarse foreground thresholds to try, in (0, 1); ``"seeded"`` also
        tries 0.02-0.15.
    progress : callable, optional
        ``progress(done, total)`` after each setting tried (total grows as
        the search proceeds).

    Returns
    -------
    settings : dict
        Keywords of :func:`~napari_unet.postprocess.probabilities_to_labels`
        (``method``, ``threshold``, ``seed_threshold``, ``min_size``,
        ``min_seed_size``, ``split_depth``) plus ``metric``, ``score`` (the
        metric's value; for errors the error itself), ``default_score``
        (at ``probabilities_to_labels``'s defaults), ``images`` and
        ``tried`` (settings evaluated). JSON-ready: store it as the model
        metadata's ``postprocessing``.
    """
    if metric not in METRICS:
        raise ValueError(f"`metric` must be one of {METRICS}, got {metric!r}")
    if len(probabilities) != len(labels) or not len(labels):
        raise ValueError(
            f"need as many label images as probability maps (at least one), got "
            f"{len(labels)} and {len(probabilities)}"
        )
    classes = int(np.asarray(probabilities[0]).shape[0])
    if methods is None:
        methods = ("watershed", "components") + (("seeded",) if classes == 2 else ())
    unknown = set(methods) - {"watershed", "components", "seeded"}
    if unknown or not methods:
        raise ValueError(
            f"`methods` must be among ('watershed', 'components', 'seeded'), got {methods}"
        )
    tried: dict[tuple, float] = {}

    def score(options: dict[str, Any]) -> float:
        key = tuple(sorted(options.items()))
        if key not in tried:
            tried[key] = _score(probabilities, labels, options, metric)
            if progress is not None:
                progress(len(tried), len(tried) + 1)
        return tried[key]

    def best_of(base: dict[str, Any], name: str, values: Sequence[Any]) -> dict[str, Any]:
        best, best_score = base, score(base)
        for value in values:
            candidate = {**base, name: value}
            if (s := score(candidate)) > best_score:
                best, best_score = candidate, s
        return best

    default = {"method": "watershed", "threshold": 0.5}
    default_score = score(default) if "watershed" in methods else None
    finalists = [_search(method, classes, thresholds, best_of) for method in methods]
    # On a tie the simpler connected components win.
    finalists.sort(key=lambda options: options["method"] != "components")
    chosen = max(finalists, key=score)
    value = score(chosen)
    error = metric in _ERRORS
    return {
        **chosen,
        "metric": metric,
        "score": -value if error else value,
        "default_score": None
        if default_score is None
        else (-default_score if error else default_score),
        "images": len(labels),
        "tried": len(tried),
    }


def _search(
    method: str,
    classes: int,
    thresholds: Sequence[float],
    best_of: Callable[[dict[str, Any], str, Sequence[Any]], dict[str, Any]],
) -> dict[str, Any]:
    """The coordinate search of one method (see :func:`choose_postprocessing`)."""
    if method == "seeded":
        start = {"method": method, "threshold": 0.5, "seed_threshold": 0.7, "min_seed_size": 16}
        options = best_of(start, "threshold", sorted({*_LOW, *thresholds}))
        options = best_of(options, "seed_threshold", _SEEDS)
        options = best_of(options, "min_seed_size", (1, 4, 64, 200))
        # No seed_erosion here: on ISBI slices 20-24 it lowered the Rand error
        # of the slices it was chosen on (0.065 to 0.058) but raised it on
        # held-out slices (leave-one-out 0.081 to 0.091): more freedom to overfit.
    else:
        options = best_of({"method": method, "threshold": 0.5}, "threshold", thresholds)
    if method == "watershed" and classes == 3:
        t = options["threshold"]
        seeds = [round(float(s), 2) for s in np.arange(0.5, 0.96, 0.05) if s >= t - 1e-9]
        options = best_of({**options, "seed_threshold": max(t, 0.7)}, "seed_threshold", seeds)
        options = best_of({**options, "min_seed_size": 4}, "min_seed_size", (1, 8, 16, 32))
    elif method == "watershed":
        options = best_of({**options, "split_depth": 2.0}, "split_depth", (1.0, 3.0, 5.0, 8.0))
    options = best_of({**options, "min_size": 16}, "min_size", (0, 4, 8, 32, 64, 128))
    t = options["threshold"]
    fine = [round(float(t + d), 3) for d in (-0.04, -0.02, 0.02, 0.04) if 0 < t + d < 1]
    if method == "watershed" and "seed_threshold" in options:
        fine = [f for f in fine if f <= options["seed_threshold"]]
    return best_of(options, "threshold", fine)


def scaled_sizes(options: Mapping[str, Any], factor: float) -> dict[str, Any]:
    """Post-processing keywords for an image predicted at zoom ``factor``.

    The size limits (``min_size``, ``min_seed_size``: areas in the model's
    pixels) become ``size / factor**2`` pixels of the image, so an object
    too small for the model is too small at any zoom; ``seed_erosion`` (a
    radius) becomes ``radius / factor``; the rest is copied.
    """
    out = dict(options)
    if factor != 1.0:
        for name in _AREAS:
            if out.get(name) is not None:
                out[name] = max(1, math.floor(out[name] / factor**2 + 0.5))
        for name in _LENGTHS:
            if out.get(name):
                out[name] = max(1, math.floor(out[name] / factor + 0.5))
    return out


def postprocessing_options(
    metadata: dict[str, Any],
    *,
    factor: float = 1.0,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Keywords for ``probabilities_to_labels`` from a model file's metadata.

    Parameters
    ----------
    metadata : dict
        A model file's metadata. Its ``postprocessing`` entry (chosen on
        validation, :func:`choose_postprocessing`) wins; older files give
        only the bundled card's ``pretrained.postprocessing.threshold``.
    factor : float
        Zoom the image was predicted at (``scale.scale_factor``); size
        thresholds, in the model's pixels, become ``size / factor**2`` in
        the image's.
    overrides : dict, optional
        The user's settings (None values are ignored); they replace the
        stored ones.

    Returns
    -------
    options : dict
        Only keywords ``probabilities_to_labels`` accepts.
    """
    stored = metadata.get("postprocessing") or {}
    if not stored:
        card = (metadata.get("pretrained") or {}).get("postprocessing") or {}
        stored = {k: v for k, v in card.items() if k in _OPTIONS}
    options = scaled_sizes({k: stored[k] for k in _OPTIONS if stored.get(k) is not None}, factor)
    options.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return options
