"""``napari-unet export``: a model as a bioimage.io package or an ONNX file.

A front over :func:`napari_unet.export.export_bioimageio` and
:func:`napari_unet.export.export_onnx`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._errors import EXIT_OUTPUT, EXIT_USAGE, CommandError


def add_parser(subparsers: Any, parents: list) -> None:
    parser = subparsers.add_parser(
        "export",
        parents=parents,
        help="write a model as a bioimage.io package or ONNX file",
        description=(
            "Export a model file for other tools.\n"
            "  --format bioimageio: a bioimage.io model package (rdf.yaml, TorchScript and\n"
            "    state-dict weights, test tensors, cover, documentation) for deepImageJ,\n"
            "    ilastik, QuPath and bioimageio.core; --out ending in .zip writes a zip,\n"
            "    otherwise a folder. napari-unet reads the package back (load_model).\n"
            "  --format onnx: the network with its softmax as one .onnx file, checked\n"
            "    against PyTorch with onnxruntime. The input must be normalised already.\n"
            "Needs the export extra: pip install 'napari-unet-cells[export]'."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="model file (.safetensors)")
    parser.add_argument(
        "--format",
        choices=("bioimageio", "onnx"),
        default="bioimageio",
        help="default: %(default)s",
    )
    parser.add_argument(
        "--out", required=True, metavar="PATH", help="package .zip / folder, or .onnx file"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    group = parser.add_argument_group("bioimage.io options")
    group.add_argument("--name", help="model name (default: from --out)")
    group.add_argument("--description", help="one-line description")
    group.add_argument(
        "--author", action="append", metavar="NAME", help="author name (repeat for several)"
    )
    group.add_argument(
        "--license", default="CC-BY-4.0", help="SPDX licence of the weights (default: %(default)s)"
    )
    group.add_argument(
        "--sample",
        metavar="IMAGE",
        help="a typical raw image for the test tensors and cover (default: synthetic)",
    )
    group.add_argument("--tag", action="append", metavar="TAG", help="extra tag (repeatable)")
    group.add_argument(
        "--onnx-weights", action="store_true", help="also include ONNX weights in the package"
    )
    group.add_argument(
        "--no-validate", action="store_true", help="skip the bioimageio.spec validation"
    )
    group.add_argument(
        "--test",
        action="store_true",
        help="also run bioimageio.core's model test (inference with every weight format)",
    )
    parser.set_defaults(run=run)


def _read_sample(path: str, model: Any) -> Any:
    """The --sample image, channels first for a colour image (read as (Y, X, C))."""
    from ..axes import move_channels
    from ..io import read_image

    sample = read_image(path)
    if (
        sample.ndim == model.spatial_dims + 1
        and sample.shape[-1] in (3, 4)
        and sample.shape[0] != model.in_channels
    ):
        sample = move_channels(sample, sample.ndim - 1)
    return sample


def run(args: argparse.Namespace) -> int:
    from .. import export
    from ..io import load_model
    from ..pretrained import resolve_model

    try:
        model, meta = load_model(resolve_model(args.model))
    except (FileNotFoundError, ValueError) as err:
        raise CommandError(f"MODEL: {err}") from err
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CommandError(f"{out} exists; pass --overwrite to replace it", code=EXIT_OUTPUT)
    if not out.resolve().parent.is_dir():
        raise CommandError(f"--out: folder {out.parent} does not exist", code=EXIT_OUTPUT)
    if args.format == "onnx" and out.suffix.lower() != ".onnx":
        raise CommandError(
            f"--out {out}: an ONNX export needs a file name ending in .onnx", code=EXIT_USAGE
        )
    try:
        sample = None if args.sample is None else _read_sample(args.sample, model)
    except (OSError, ValueError) as err:
        raise CommandError(f"--sample: {err}") from err
    try:
        if args.format == "onnx":
            path = export.export_onnx((model, meta), out, overwrite=args.overwrite)
        else:
            weights = ("pytorch_state_dict", "torchscript")
            path = export.export_bioimageio(
                (model, meta),
                out,
                name=args.name,
                description=args.description,
                authors=args.author,
                license=args.license,
                sample=sample,
                weights=weights + (("onnx",) if args.onnx_weights else ()),
                tags=args.tag or (),
                overwrite=args.overwrite,
                validate=not args.no_validate,
                test=args.test,
            )
    except FileExistsError as err:
        raise CommandError(str(err), code=EXIT_OUTPUT) from err
    except (ImportError, FileNotFoundError, ValueError, RuntimeError) as err:
        raise CommandError(str(err)) from err
    print(f"wrote {path}")
    return 0
