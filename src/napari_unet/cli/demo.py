"""``napari-unet demo``: napari with synthetic cells and the four widgets docked."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._errors import EXIT_OUTPUT, CommandError


def add_parser(subparsers: Any, parents: list) -> None:
    parser = subparsers.add_parser(
        "demo",
        parents=parents,
        help="open napari with sample cells and the four widgets",
        description=(
            "Open napari with synthetic touching cells (2D, with ground truth, and a 3D\n"
            "stack) and the Annotate cells, Weight map, Train and Predict widgets docked.\n"
            "The ground truth is already in the training set: press 'Start training',\n"
            "then 'Predict'. Needs napari with a Qt binding:\n"
            "pip install 'napari-unet-cells[demo]'."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--no-stack", action="store_true", help="open the 2D sample only")
    parser.add_argument(
        "--screenshot",
        metavar="OUT.png",
        help="save a screenshot of the window and exit instead of running napari",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        import napari
    except ImportError as err:
        raise CommandError(
            f"napari is not installed ({err}); install it with: "
            "pip install 'napari-unet-cells[demo]'"
        ) from err
    from .._widgets._demo import setup_demo

    if args.screenshot and not Path(args.screenshot).resolve().parent.is_dir():
        raise CommandError(
            f"--screenshot: folder {Path(args.screenshot).parent} does not exist",
            code=EXIT_OUTPUT,
        )
    viewer = napari.Viewer(title="napari-unet demo")
    setup_demo(viewer, stack=not args.no_stack)
    if args.screenshot:
        from qtpy.QtWidgets import QApplication

        viewer.window.resize(1400, 900)
        QApplication.processEvents()
        viewer.reset_view()
        viewer.screenshot(args.screenshot, canvas_only=False)
        viewer.close()
        print(f"wrote {args.screenshot}")
        return 0
    napari.run()
    return 0
