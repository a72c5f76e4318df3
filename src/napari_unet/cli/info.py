"""``napari-unet info``: what a model file holds, or which distribution is installed.

A front over :func:`napari_unet.model_info.describe_model` and
:func:`napari_unet.distribution.installation_report`.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any, parents: list) -> None:
    parser = subparsers.add_parser(
        "info",
        parents=parents,
        help="show what a model file holds, or (no MODEL) which distribution is installed",
        description="Print the metadata of a model file: architecture, classes, "
        "normalisation and how it was trained. Reads the file safely (no code runs). "
        "Without MODEL: which installed distribution provides the napari_unet package "
        "(napari-unet-cells; a warning if the unrelated napari-unet claims it too).",
    )
    parser.add_argument("model", metavar="MODEL", nargs="?", help="model file (.safetensors)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON metadata")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    if args.model is None:
        from ..distribution import installation_report

        report, ok = installation_report()
        print(report)
        return 0 if ok else 1
    from ..io import load_model
    from ..model_info import describe_model
    from ..pretrained import resolve_model
    from ._errors import CommandError

    try:
        # Loading (not only reading the header) checks that the weights fit the architecture.
        model, meta = load_model(resolve_model(args.model))
    except (FileNotFoundError, ValueError) as err:
        raise CommandError(str(err)) from err
    if args.json:
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0
    parameters = sum(p.numel() for p in model.parameters())
    print(describe_model(meta, source=args.model, parameters=parameters))
    return 0
