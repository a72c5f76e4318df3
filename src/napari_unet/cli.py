"""The ``napari-unet`` command line.

Each sub-command has an ``_add_<name>(subparsers)`` function that declares its
arguments and sets ``func`` to the function that runs it. ``main`` returns the
process exit code: 0 on success, 1 on bad input (with a one-line message on
stderr naming the problem), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import __version__

__all__ = ["main"]


class CommandError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-unet",
        description="U-Net and U-Net++ for microscopy: train, predict, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for add in _COMMANDS:
        add(subparsers)
    return parser


# Sub-commands register themselves here, in the order `--help` lists them.
_COMMANDS: list = []


# ---------------------------------------------------------------------------
# evaluate: score label images against ground truth
# ---------------------------------------------------------------------------

# name -> description (shown by `napari-unet evaluate --help`)
_EVALUATE_METRICS: dict[str, str] = {
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
_EVALUATE_DEFAULT = ("rand_error", "pixel_error", "ap50", "mean_ap", "seg")


def _add_evaluate(subparsers) -> None:
    names = "\n".join(f"  {name:<14} {text}" for name, text in _EVALUATE_METRICS.items())
    parser = subparsers.add_parser(
        "evaluate",
        help="score predicted label images against ground truth",
        description=(
            "Compare predicted label images with ground-truth label images.\n"
            "Files are paired by name without the suffix (pred slice_00.tif <-> gt\n"
            "slice_00.png); a file against a folder is paired with its namesake.\n"
            "Prints one row per image and the mean (undefined scores, e.g. SEG of an\n"
            "image without objects, are skipped); 0 = background in both."
        ),
        epilog=f"metrics:\n{names}\ndefault: {' '.join(_EVALUATE_DEFAULT)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--pred", required=True, metavar="DIR_OR_FILE", help="predicted label image(s)"
    )
    parser.add_argument(
        "--gt", required=True, metavar="DIR_OR_FILE", help="ground-truth label image(s)"
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        metavar="NAME",
        help="metrics to compute (space- or comma-separated; see below)",
    )
    parser.add_argument("--json", metavar="OUT.json", help="also write the results as JSON")
    parser.add_argument(
        "--binary-labels",
        action="store_true",
        help=(
            "images are binary (e.g. ISBI 2012: 255 = cell, 0 = membrane): objects are the "
            "4-connected components of the non-zero pixels"
        ),
    )
    parser.set_defaults(func=_run_evaluate)


def _evaluate_metric_names(requested: Sequence[str] | None) -> list[str]:
    if not requested:
        return list(_EVALUATE_DEFAULT)
    names = [part for item in requested for part in item.split(",") if part]
    unknown = [name for name in names if name not in _EVALUATE_METRICS]
    if unknown:
        raise CommandError(
            f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(_EVALUATE_METRICS)}"
        )
    return list(dict.fromkeys(names))


def _evaluate_pairs(pred: str, gt: str) -> list[tuple[str, Path, Path]]:
    """Pair prediction and ground-truth files by stem; CommandError if any is unpaired."""
    from .io import list_images

    try:
        pred_files, gt_files = list_images(pred), list_images(gt)
    except (FileNotFoundError, ValueError) as err:
        raise CommandError(str(err)) from err
    for where, files in (("--pred", pred_files), ("--gt", gt_files)):
        if not files:
            raise CommandError(f"no image files in {where} {pred if where == '--pred' else gt}")
    if Path(pred).is_file() and Path(gt).is_file():
        return [(pred_files[0].stem, pred_files[0], gt_files[0])]

    def by_stem(files: list[Path], where: str) -> dict[str, Path]:
        table: dict[str, Path] = {}
        for path in files:
            if path.stem in table:
                raise CommandError(
                    f"{where}: two files with the same name: {table[path.stem].name}, {path.name}"
                )
            table[path.stem] = path
        return table

    preds, gts = by_stem(pred_files, "--pred"), by_stem(gt_files, "--gt")
    # One file against a folder: score that file only.
    if Path(pred).is_file():
        gts = {stem: path for stem, path in gts.items() if stem in preds}
    elif Path(gt).is_file():
        preds = {stem: path for stem, path in preds.items() if stem in gts}
    problems = []
    no_pred = sorted(set(gts) - set(preds))
    no_gt = sorted(set(preds) - set(gts))
    if no_pred:
        problems.append(f"no prediction for {', '.join(gts[s].name for s in no_pred)}")
    if no_gt:
        problems.append(f"no ground truth for {', '.join(preds[s].name for s in no_gt)}")
    if problems:
        raise CommandError("; ".join(problems))
    return [(stem, preds[stem], gts[stem]) for stem in sorted(gts)]


def _evaluate_load(path: Path, binary: bool) -> np.ndarray:
    """Read a label image; binary images become their connected components."""
    from .io import read_image
    from .metrics import mask_to_instances

    try:
        image = read_image(path)
    except (FileNotFoundError, ValueError) as err:
        raise CommandError(str(err)) from err
    if (
        path.suffix.lower() not in (".tif", ".tiff")
        and image.ndim == 3
        and image.shape[-1]
        in (
            3,
            4,
        )
    ):
        # A grey PNG saved as RGB(A): accept it when the colour channels agree.
        colour = image[..., :3]
        if not (colour == colour[..., :1]).all():
            raise CommandError(f"{path} is a colour image, expected a single-channel label image")
        image = colour[..., 0]
    if not (np.issubdtype(image.dtype, np.integer) or image.dtype == bool):
        if not np.issubdtype(image.dtype, np.floating) or not np.all(image == np.round(image)):
            raise CommandError(
                f"{path} (dtype {image.dtype}) is not a label image: expected integer labels; "
                "turn probabilities into labels first"
            )
        image = image.astype(np.int64)
    if image.size and image.min() < 0:
        raise CommandError(f"{path} contains negative labels")
    if binary:
        return mask_to_instances(image)
    return image


def _evaluate_one(gt: np.ndarray, pred: np.ndarray, names: list[str]) -> dict[str, float]:
    from . import metrics

    values: dict[str, float] = {}
    if "rand_error" in names:
        values["rand_error"] = metrics.rand_error(gt, pred)
    if {"pixel_error", "warping_error", "dice"} & set(names):
        gt_mask, pred_mask = metrics.interior_mask(gt), metrics.interior_mask(pred)
        if "pixel_error" in names:
            values["pixel_error"] = metrics.pixel_error(gt_mask, pred_mask)
        if "warping_error" in names:
            values["warping_error"] = metrics.warping_error(gt_mask, pred_mask)
        if "dice" in names:
            values["dice"] = metrics.dice_score(gt, pred)
    if {"ap50", "ap75", "mean_ap", "precision50", "recall50", "f1_50"} & set(names):
        ap = metrics.average_precision(gt, pred)
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
        values["seg"] = metrics.seg_score(gt, pred)
    return {name: float(values[name]) for name in names}


def _run_evaluate(args: argparse.Namespace) -> int:
    import json

    names = _evaluate_metric_names(args.metrics)
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise CommandError(f"--json: folder {Path(args.json).parent} does not exist")
    pairs = _evaluate_pairs(args.pred, args.gt)

    width = max(5, *(len(stem) for stem, _, _ in pairs))
    columns = ["n_gt", "n_pred", *names]
    widths = [max(7, len(c)) for c in columns]
    print(
        f"{'image':<{width}}  "
        + "  ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))
    )

    def fmt(value: float, w: int) -> str:
        return f"{value:>{w}}" if isinstance(value, int) else f"{value:>{w}.6f}"

    rows = []
    for stem, pred_path, gt_path in pairs:
        gt = _evaluate_load(gt_path, args.binary_labels)
        pred = _evaluate_load(pred_path, args.binary_labels)
        if gt.shape != pred.shape:
            raise CommandError(
                f"shapes differ: {pred_path} has shape {pred.shape}, {gt_path} has shape "
                f"{gt.shape}"
            )
        values = _evaluate_one(gt, pred, names)
        row = {
            "name": stem,
            "pred": str(pred_path),
            "gt": str(gt_path),
            "shape": list(gt.shape),
            "n_gt": len(np.unique(gt[gt != 0])),
            "n_pred": len(np.unique(pred[pred != 0])),
            **values,
        }
        rows.append(row)
        cells = [fmt(row[c], w) for c, w in zip(columns, widths, strict=True)]
        print(f"{stem:<{width}}  " + "  ".join(cells), flush=True)

    mean = {}
    for name in names:
        finite = [row[name] for row in rows if np.isfinite(row[name])]
        mean[name] = float(np.mean(finite)) if finite else float("nan")
    cells = ["".rjust(w) for w in widths[:2]] + [
        fmt(mean[n], w) for n, w in zip(names, widths[2:], strict=True)
    ]
    print(f"{'mean':<{width}}  " + "  ".join(cells))

    if args.json:

        def clean(value):
            # JSON has no NaN: undefined scores (e.g. SEG without objects) become null.
            return None if isinstance(value, float) and not np.isfinite(value) else value

        report = {
            "pred": str(args.pred),
            "gt": str(args.gt),
            "binary_labels": bool(args.binary_labels),
            "metrics": names,
            "images": [{k: clean(v) for k, v in row.items()} for row in rows],
            "mean": {k: clean(v) for k, v in mean.items()},
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
        print(f"wrote {args.json}")
    return 0


_COMMANDS.append(_add_evaluate)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandError as err:
        print(f"napari-unet {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"napari-unet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
