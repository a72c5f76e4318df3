"""``napari-unet evaluate``: score label images against ground truth.

A front over :func:`napari_unet.evaluation.evaluate_pairs` (with
:func:`napari_unet.io.pair_by_stem`); :func:`~napari_unet.evaluation.evaluate_folders`
is the same in one Python call.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._errors import EXIT_OUTPUT, CommandError


def add_parser(subparsers: Any, parents: list) -> None:
    from ..evaluation import DEFAULT_METRICS, METRICS

    names = "\n".join(f"  {name:<14} {text}" for name, text in METRICS.items())
    parser = subparsers.add_parser(
        "evaluate",
        parents=parents,
        help="score predicted label images against ground truth",
        description=(
            "Compare predicted label images with ground-truth label images.\n"
            "Files are paired by name without the suffix (pred slice_00.tif <-> gt\n"
            "slice_00.png); a file against a folder is paired with its namesake.\n"
            "Prints one row per image and the mean (undefined scores, e.g. SEG of an\n"
            "image without objects, are skipped); 0 = background in both."
        ),
        epilog=f"metrics:\n{names}\ndefault: {' '.join(DEFAULT_METRICS)}",
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
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument(
        "--binary-labels",
        action="store_true",
        help=(
            "images are binary (e.g. ISBI 2012: 255 = cell, 0 = membrane): objects are the "
            "4-connected components of the non-zero pixels"
        ),
    )
    parser.set_defaults(run=run)


def _cell(value: float, width: int) -> str:
    return f"{value:>{width}}" if isinstance(value, int) else f"{value:>{width}.6f}"


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_pairs, metric_names
    from ..io import pair_by_stem
    from ..outputs import check_outputs, write_json

    names = metric_names(args.metrics)
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise CommandError(
            f"--json: folder {Path(args.json).parent} does not exist", code=EXIT_OUTPUT
        )
    pairs = pair_by_stem(args.pred, args.gt, names=("prediction", "ground truth"))
    if args.json:
        # Before evaluating: an existing report, a link or an input at that name is refused.
        inputs = [path for _, pred, gt in pairs for path in (pred, gt)]
        check_outputs([args.json], inputs=inputs, overwrite=args.overwrite)

    width = max(5, *(len(stem) for stem, _, _ in pairs))
    columns = ["n_gt", "n_pred", *names]
    widths = [max(7, len(c)) for c in columns]
    print(
        f"{'image':<{width}}  "
        + "  ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))
    )

    def show(row: dict) -> None:
        cells = [_cell(row[c], w) for c, w in zip(columns, widths, strict=True)]
        print(f"{row['name']:<{width}}  " + "  ".join(cells), flush=True)

    report = evaluate_pairs(pairs, metrics=names, binary=args.binary_labels, on_image=show)
    mean = report["mean"]
    cells = ["".rjust(w) for w in widths[:2]] + [
        _cell(mean[n], w) for n, w in zip(names, widths[2:], strict=True)
    ]
    print(f"{'mean':<{width}}  " + "  ".join(cells))
    if args.json:
        # JSON has no NaN: write_json turns undefined scores (e.g. SEG without objects) into null.
        write_json(
            args.json,
            {"pred": str(args.pred), "gt": str(args.gt), **report},
            overwrite=args.overwrite,
        )
        print(f"wrote {args.json}")
    return 0
