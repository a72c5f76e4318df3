"""Score label images against ground truth, one image or two folders at a time.

The Python form of ``napari-unet evaluate``: :data:`METRICS` names every
score, :func:`evaluate_labels` computes them for one pair of label images and
:func:`evaluate_folders` for folders of files paired by name, returning the
report the command prints and writes as JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, UsageError

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "evaluate_folders",
    "evaluate_labels",
    "evaluate_pairs",
    "metric_names",
]

#: name -> description of every score (lower is better for the ``*_error`` ones).
METRICS: dict[str, str] = {
    "rand_error": "ISBI 2012 foreground-restricted Rand error (lower is better)",
    "pixel_error": "ISBI 2012 pixel error, 1 - F1 of cell pixels (lower is better)",
    "warping_error": "ISBI 2012 warping error, 2D simple-point warping (lower is better)",
    "ap50": "DSB 2018 average precision TP/(TP+FP+FN) at IoU 0.5",
    "ap75": "DSB 2018 average precision at IoU 0.75",
    "mean_ap": "DSB 2018 score: mean average precision over IoU 0.5:0.05:0.95",
    "precision50": "object precision at IoU 0.5",
    "recall50": "object recall at IoU 0.5",
    "f1_50": "object F1 at IoU 0.5",
    "seg": "Cell Tracking Challenge SEG (mean Jaccard of matched reference objects)",
    "dice": "Dice of the foreground masks",
}
DEFAULT_METRICS = ("rand_error", "pixel_error", "ap50", "mean_ap", "seg")
_AP = ("ap50", "ap75", "mean_ap", "precision50", "recall50", "f1_50")


def metric_names(requested: Sequence[str] | None = None) -> list[str]:
    """Metric names from a list whose items may be comma-separated; None: the defaults.

    Raises
    ------
    UsageError
        If a name is not in :data:`METRICS`.
    """
    if not requested:
        return list(DEFAULT_METRICS)
    names = [part for item in requested for part in item.split(",") if part]
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise UsageError(
            f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}"
        )
    return list(dict.fromkeys(names))


def evaluate_labels(
    true: np.ndarray, pred: np.ndarray, metrics: Sequence[str] | None = None
) -> dict[str, float]:
    """The named scores of predicted instance labels against ground-truth labels.

    Parameters
    ----------
    true, pred : ndarray of int, same shape
        Instance labels, 0 = background.
    metrics : sequence of str, optional
        Names from :data:`METRICS`; default :data:`DEFAULT_METRICS`.

    Returns
    -------
    scores : dict of str to float
        In the order asked for; NaN where a score is undefined (e.g. SEG
        without reference objects).
    """
    from . import metrics as m

    names = metric_names(metrics)
    values: dict[str, float] = {}
    if "rand_error" in names:
        values["rand_error"] = m.rand_error(true, pred)
    if {"pixel_error", "warping_error", "dice"} & set(names):
        true_mask, pred_mask = m.interior_mask(true), m.interior_mask(pred)
        if "pixel_error" in names:
            values["pixel_error"] = m.pixel_error(true_mask, pred_mask)
        if "warping_error" in names:
            values["warping_error"] = m.warping_error(true_mask, pred_mask)
        if "dice" in names:
            values["dice"] = m.dice_score(true, pred)
    if set(_AP) & set(names):
        ap = m.average_precision(true, pred)
        at50 = ap["thresholds"].index(0.5)
        values.update(
            ap50=ap["ap"][at50],
            ap75=ap["ap"][ap["thresholds"].index(0.75)],
            mean_ap=ap["mean_ap"],
            precision50=ap["precision"][at50],
            recall50=ap["recall"][at50],
            f1_50=ap["f1"][at50],
        )
    if "seg" in names:
        values["seg"] = m.seg_score(true, pred)
    return {name: float(values[name]) for name in names}


def _load(path: Path, binary: bool) -> np.ndarray:
    from .io import read_labels
    from .metrics import mask_to_instances

    labels = read_labels(path)
    return mask_to_instances(labels) if binary else labels


def evaluate_pairs(
    pairs: Sequence[tuple[str, Path, Path]],
    *,
    metrics: Sequence[str] | None = None,
    binary: bool = False,
    on_image: Callable[[dict[str, Any]], object] | None = None,
) -> dict[str, Any]:
    """Score (name, prediction file, ground-truth file) pairs; see :func:`evaluate_folders`.

    ``on_image`` is called with each image's row as soon as it is scored.
    """
    names = metric_names(metrics)
    rows = []
    for stem, pred_path, gt_path in pairs:
        gt, pred = _load(Path(gt_path), binary), _load(Path(pred_path), binary)
        if gt.shape != pred.shape:
            raise InputError(
                f"shapes differ: {pred_path} has shape {pred.shape}, {gt_path} has shape "
                f"{gt.shape}",
                path=pred_path,
            )
        row = {
            "name": stem,
            "pred": str(pred_path),
            "gt": str(gt_path),
            "shape": list(gt.shape),
            "n_gt": len(np.unique(gt[gt != 0])),
            "n_pred": len(np.unique(pred[pred != 0])),
            **evaluate_labels(gt, pred, names),
        }
        rows.append(row)
        if on_image is not None:
            on_image(row)
    mean = {}
    for name in names:
        finite = [row[name] for row in rows if np.isfinite(row[name])]
        mean[name] = float(np.mean(finite)) if finite else float("nan")
    return {"binary_labels": bool(binary), "metrics": names, "images": rows, "mean": mean}


def evaluate_folders(
    pred: str | Path,
    gt: str | Path,
    *,
    metrics: Sequence[str] | None = None,
    binary: bool = False,
    on_image: Callable[[dict[str, Any]], object] | None = None,
) -> dict[str, Any]:
    """Score predicted label images against ground truth, files paired by name.

    Parameters
    ----------
    pred, gt : str or Path
        Folders of label images (or single files), paired by name without
        suffix (``slice_00.tif`` <-> ``slice_00.png``,
        :func:`napari_unet.io.pair_by_stem`).
    metrics : sequence of str, optional
        Names from :data:`METRICS`; default :data:`DEFAULT_METRICS`.
    binary : bool
        The images are binary masks (e.g. ISBI 2012: 255 = cell, 0 = membrane):
        objects are their 4-connected components.
    on_image : callable, optional
        Called with each image's row as soon as it is scored.

    Returns
    -------
    report : dict
        ``pred``, ``gt``, ``binary_labels``, ``metrics``, ``images`` (one row
        per image: name, files, shape, ``n_gt``, ``n_pred`` and the scores)
        and ``mean`` (over the images where a score is defined; NaN if none).

    Raises
    ------
    InputError
        Unpaired files, unreadable or non-label images, or different shapes.
    UsageError
        An unknown metric name.
    """
    from .io import pair_by_stem

    pairs = pair_by_stem(pred, gt, names=("prediction", "ground truth"))
    report = evaluate_pairs(pairs, metrics=metrics, binary=binary, on_image=on_image)
    return {"pred": str(pred), "gt": str(gt), **report}
