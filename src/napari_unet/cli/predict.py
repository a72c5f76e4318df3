"""``napari-unet predict``: segment image files, in memory or chunk by chunk.

A front over :func:`napari_unet.segment.segment` (image files) and
:func:`napari_unet.segment.segment_chunked` (Zarr / OME-Zarr stores and
TIFFs too large for the memory available), the pipeline the Predict widget and Python users call.
This module only finds the inputs, checks every output before any work, and
writes the results.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import EXIT_USAGE, CommandError
from ._progress import ProgressBar, dask_bar


def add_parser(subparsers: Any, parents: list) -> None:
    parser = subparsers.add_parser(
        "predict",
        parents=parents,
        help="segment images with a trained model",
        description=(
            "Predict every INPUT (files or folders of TIFF/PNG/... images; TIFF stacks are\n"
            "predicted plane by plane) and write DIR/<name>.tif (instance labels) and, with\n"
            "--probabilities, DIR/probabilities/<name>.tif (float32 class probabilities,\n"
            "classes first). `napari-unet evaluate --pred DIR --gt LABELS` then pairs the\n"
            "label images with the ground truth by name. Existing outputs are never\n"
            "replaced without --overwrite.\n\n"
            "Chunked mode, for images larger than memory: when an INPUT is a Zarr or\n"
            "OME-Zarr store (the first multiscale level is read), a TIFF whose in-memory\n"
            "run would need more than half the memory available, or\n"
            "--out ends in .zarr, or --chunks or --scheduler is given, images are read,\n"
            "predicted and written chunk by chunk with Dask (peak memory set by the chunk\n"
            "size) and the outputs are OME-Zarr images: DIR/<name>.zarr (uint32 labels,\n"
            "ids merged across chunks) and DIR/probabilities/<name>.zarr. --out NAME.zarr\n"
            "(one INPUT) writes NAME.zarr and probabilities/NAME.zarr beside it."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    parser.add_argument(
        "--model",
        required=True,
        metavar="MODEL",
        help="model file, or a bundled model: nuclei, em-membranes",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--probabilities", action="store_true", help="also write probabilities")
    _add_settings(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_chunked(parser)
    parser.set_defaults(run=run)


def _add_settings(parser: argparse.ArgumentParser) -> None:
    """The pipeline settings (napari_unet.segment.SegmentConfig)."""
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average over 8 rotations/flips (default: the model's choice; em-membranes: on)",
    )
    parser.add_argument("--tile", type=int, metavar="N", help="input tile side (default: auto)")
    parser.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass")
    parser.add_argument(
        "--level",
        type=int,
        metavar="L",
        help="U-Net++ only: predict with the network pruned at level L (1..depth; faster, "
        "lighter) instead of the ensemble of all heads",
    )
    parser.add_argument(
        "--channel-axis",
        type=int,
        metavar="AXIS",
        help="axis of the channels in multi-channel TIFFs (default: guessed from the model)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help="foreground threshold (default: the model's recommendation, else 0.5)",
    )
    parser.add_argument(
        "--diameter",
        type=_diameter,
        default="default",
        metavar="PX|auto|none",
        help="typical object diameter in the image, pixels: the image is rescaled so objects "
        "have the model's training size and the labels come back at the original size; "
        "auto: estimated with the model; none: no rescaling (default: auto for instance "
        "models whose file records an object size, else none). In-memory mode only",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "eager", "compile", "onnxruntime"),
        help="inference engine (default auto: ONNX Runtime on the CPU when it pays back, else "
        "PyTorch eager; eager gives bit-identical repeat runs)",
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="auto (default): fp32 unless the model file records a passed bf16 check",
    )
    parser.add_argument(
        "--axes",
        metavar="AXES",
        help="what the image axes are, e.g. ZYX, TYX, TZYX, CZYX, YXC (default: a stack with "
        "one axis besides channels, Y and X is ZYX); planes of a Z axis are linked into 3D "
        "objects by overlap (linking.link_planes); T planes are not",
    )
    parser.add_argument(
        "--no-link",
        action="store_true",
        help="label the planes of a Z-stack independently (default: planes of the Z axis are "
        "linked into 3D objects, in memory and in chunked mode)",
    )


def _diameter(text: str) -> float | str | None:
    """``--diameter``: a positive number of pixels, ``auto`` or ``none``."""
    if text.lower() in ("auto", "default"):
        return text.lower()
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of pixels, 'auto' or 'none', got {text!r}"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of pixels, got {text}")
    return value


def _add_chunked(parser: argparse.ArgumentParser) -> None:
    chunked = parser.add_argument_group("chunked mode (Zarr, large TIFF)")
    chunked.add_argument(
        "--chunks",
        metavar="N[,N]",
        help="spatial chunk side(s) in pixels for prediction (default: the input's chunks, "
        "clamped to 256-2048; 512 for TIFF); Z,Y,X for 3D models (default Z: 32-256)",
    )
    chunked.add_argument(
        "--scheduler",
        metavar="SCHEDULER",
        help="Dask scheduler: threads (default), synchronous, or the address of a "
        "dask.distributed scheduler (tcp://host:8786); workers must see the output folder",
    )
    chunked.add_argument(
        "--labels-margin",
        type=int,
        default=64,
        metavar="PX",
        help="context each chunk is labelled with; should exceed the largest cell (default 64)",
    )


def _settings(args: argparse.Namespace) -> tuple[tuple[Any, dict], Any]:
    """The model (loaded once) and the pipeline settings of the command."""
    from ..pretrained import resolve_model
    from ..segment import SegmentConfig, load_segmenter

    try:
        model, meta = load_segmenter(resolve_model(args.model))
    except (FileNotFoundError, ValueError) as err:
        raise CommandError(f"--model: {err}") from err
    try:
        config = SegmentConfig.from_metadata(
            meta,
            tile=args.tile,
            tta=args.tta,
            threshold=args.threshold,
            batch_size=args.batch_size,
            device=args.device,
            level=args.level,
            backend=args.backend,
            precision=args.precision,
            axes=args.axes,
            link_planes=not args.no_link,
            probabilities=args.probabilities,
            diameter=args.diameter,
        )
        if config.level is not None:  # a wrong level fails before any image is read
            load_segmenter(model, level=config.level)
    except ValueError as err:
        option = "--level" if "level" in str(err) else "option"
        raise CommandError(f"{option}: {err}", code=EXIT_USAGE) from err
    return (model, meta), config


def run(args: argparse.Namespace) -> int:
    model, config = _settings(args)
    if _wants_chunked(args, model[0]):
        return _run_chunked(args, model, config)
    return _run_in_memory(args, model, config)


def _inputs(items: Sequence[str]) -> list[Path]:
    from ..io import list_images

    inputs: list[Path] = []
    for item in items:
        found = list_images(item)
        if not found:
            raise CommandError(f"no image files in {item}")
        inputs.extend(found)
    stems = [p.stem for p in inputs]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise CommandError(
            f"two inputs would write the same outputs: {', '.join(duplicates)}", code=EXIT_USAGE
        )
    return inputs


def _run_in_memory(args: argparse.Namespace, model: tuple, config: Any) -> int:
    from ..io import write_image
    from ..outputs import check_outputs, remove_orphans
    from ..progress import Cancelled
    from ..segment import segment

    inputs = _inputs(args.inputs)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} is a file, expected a folder", code=EXIT_USAGE)
    targets = []
    for path in inputs:
        names = [out / f"{path.stem}.tif"]
        if args.probabilities:
            names.append(out / "probabilities" / f"{path.stem}.tif")
        targets.append(names)
    # Every output is checked before anything is computed: never a half-done batch.
    check_outputs(
        [p for names in targets for p in names], inputs=inputs, root=out, overwrite=args.overwrite
    )
    remove_orphans(out)
    bar = ProgressBar(args.quiet)
    try:
        for path, names in zip(inputs, targets, strict=True):
            image, channel_axis = _read_for_model(path, model[0].in_channels, args.channel_axis)
            try:
                result = segment(
                    model,
                    image,
                    channel_axis=channel_axis,
                    config=config,
                    progress=bar.segment_event(path.name),
                )
            except Cancelled:
                raise KeyboardInterrupt from None
            except ValueError as err:
                raise CommandError(f"{path}: {err}") from err
            bar.close()
            labels = result.labels
            if labels.max(initial=0) < 2**16:
                labels = labels.astype(np.uint16)
            write_image(names[0], labels, overwrite=args.overwrite)
            if args.probabilities:
                write_image(names[1], result.probabilities, overwrite=args.overwrite)
            count = len(np.unique(labels)) - (1 if (labels == 0).any() else 0)
            print(
                f"{path.name}: {count} objects{_size_note(result.info)}"
                f"{_link_note(result.info, labels.shape, args.axes)} -> "
                + ", ".join(str(n) for n in names)
            )
    finally:
        bar.close()
    return 0


def _link_note(info: dict, shape: tuple[int, ...], axes: str | None) -> str:
    """Which axis was taken as Z and linked into 3D objects (stacks only)."""
    if len(shape) < 3:
        return ""
    if info.get("spatial_dims") == 3:
        return "; segmented as a volume (3D model)"
    z = info.get("linked_axis")
    names = (axes or info.get("axes") or "").upper().replace("C", "")
    if z is None:
        return "; planes not linked (no Z axis; name it with --axes, e.g. ZYX)"
    name = f" ({names[z]})" if len(names) == len(shape) else ""
    return f"; planes of axis {z}{name}, {shape[z]} planes, linked into 3D objects"


def _size_note(info: dict) -> str:
    """Which object size the run used, when it rescaled or estimated one; which engine ran."""
    engine = f" [{info['backend']} {info['precision']}]" if "backend" in info else ""
    diameter = info.get("diameter")
    if diameter is None:
        return engine
    how = "estimated" if info.get("estimated") else "given"
    factor = info.get("factor", 1.0)
    zoom = f", image scaled {factor:.2f}x" if factor and abs(factor - 1.0) > 1e-6 else ""
    return f" (object diameter {diameter:.1f} px, {how}{zoom}){engine}"


def _read_for_model(
    path: Path, channels: int, channel_axis: int | None
) -> tuple[np.ndarray, int | None]:
    """An image file and its channel axis (colour PNG/JPEG files arranged for the model)."""
    from ..axes import colour_to_channels
    from ..io import is_colour_file, read_image

    image = read_image(path)
    if is_colour_file(path, image) and channel_axis is None:
        try:
            return colour_to_channels(image, channels)
        except ValueError as err:
            raise CommandError(f"{path} is {err}") from err
    return image, channel_axis


# -- chunked mode: Zarr / OME-Zarr / large TIFF through Dask -------------------------------------


def _wants_chunked(args: argparse.Namespace, net: Any) -> bool:
    """Zarr, ``--chunks``/``--scheduler``/``.zarr`` output, or a TIFF whose in-memory run
    would not fit in the memory available (:func:`napari_unet.memory.choose_in_memory`)."""
    from ..io import is_zarr
    from ..memory import choose_in_memory

    if args.chunks or args.scheduler or Path(args.out).suffix.lower() == ".zarr":
        return True
    tile = None if args.tile is None else (args.tile, args.tile)
    for item in args.inputs:
        if is_zarr(item):
            return True
        for shape, dtype in _tiff_series(Path(item)):
            fits = choose_in_memory(
                shape,
                net,
                dtype=dtype,
                tile_shape=tile,
                batch_size=args.batch_size,
                probabilities=args.probabilities,
            )
            if not fits:
                return True
    return False


def _tiff_series(path: Path) -> list[tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of a TIFF file's first series ([] for anything else).

    Folders stay in memory (chunked mode reads only their TIFFs).
    """
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return []
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return [(tuple(series.shape), np.dtype(series.dtype))]
    except (OSError, ValueError, IndexError):
        return []  # read_image reports the problem


def _chunked_inputs(items: Sequence[str]) -> list[Path]:
    from ..io import is_zarr, list_images

    inputs: list[Path] = []
    for item in items:
        if is_zarr(item):
            if not Path(item).exists():
                raise CommandError(f"no such file or folder: {item}")
            inputs.append(Path(item))
            continue
        tiffs = [p for p in list_images(item) if p.suffix.lower() in (".tif", ".tiff")]
        if not tiffs:
            raise CommandError(f"no Zarr store or TIFF file in {item} (chunked mode)")
        inputs.extend(tiffs)
    return inputs


def _parse_chunks(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2, 3) or min(sizes) < 1:
        raise CommandError(
            f"--chunks must be N, N,N or Z,N,N (positive pixels), got {text!r}", code=EXIT_USAGE
        )
    if len(sizes) == 3:  # (Z, Y, X), for 3D models
        return tuple(sizes)
    return (sizes[0], sizes[-1])


def _chunked_targets(args: argparse.Namespace, inputs: list[Path]) -> tuple[Path, list]:
    """The output folder and (labels, probabilities or None) stores, checked before any work."""
    from ..outputs import check_outputs

    out = Path(args.out)
    if out.suffix.lower() == ".zarr":
        if len(inputs) != 1:
            raise CommandError(
                f"--out {out} names one output store but there are {len(inputs)} inputs; "
                "give a folder",
                code=EXIT_USAGE,
            )
        folder, stems = out.parent, [out.stem]
    else:
        if out.exists() and not out.is_dir():
            raise CommandError(f"--out {out} is a file, expected a folder", code=EXIT_USAGE)
        folder, stems = out, [p.name[: -len(p.suffix)] if p.suffix else p.name for p in inputs]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise CommandError(
            f"two inputs would write the same outputs: {', '.join(duplicates)}", code=EXIT_USAGE
        )
    probabilities = folder / "probabilities"
    targets = [
        (folder / f"{stem}.zarr", probabilities / f"{stem}.zarr" if args.probabilities else None)
        for stem in stems
    ]
    outputs = [p for names in targets for p in names if p is not None]
    check_outputs(outputs, inputs=inputs, root=folder, overwrite=args.overwrite)
    return folder, targets


def _run_chunked(args: argparse.Namespace, model: tuple, config: Any) -> int:
    from ..io import open_chunked
    from ..outputs import remove_orphans
    from ..segment import dask_scheduler, segment_chunked

    try:
        import zarr  # noqa: F401
    except ImportError as err:
        raise CommandError(
            f"chunked mode (Zarr, large TIFF) needs zarr ({err}); pip install 'zarr>=3'"
        ) from err
    if args.tta:
        raise CommandError(
            "--tta is not available in chunked mode (Zarr, large TIFF)", code=EXIT_USAGE
        )
    if args.tta is None:  # the model's recommended TTA does not apply here
        config = replace(config, tta=False)
    inputs = _chunked_inputs(args.inputs)
    chunks = _parse_chunks(args.chunks)
    if args.labels_margin < 1:
        raise CommandError(
            f"--labels-margin must be >= 1, got {args.labels_margin}", code=EXIT_USAGE
        )
    folder, targets = _chunked_targets(args, inputs)
    remove_orphans(folder)  # stores of a killed run, under temporary names
    with contextlib.ExitStack() as stack:
        try:
            client = stack.enter_context(dask_scheduler(args.scheduler))
        except ValueError as err:
            raise CommandError(f"--scheduler {err}", code=EXIT_USAGE) from err
        for path, (labels_path, probs_path) in zip(inputs, targets, strict=True):
            info: dict[str, Any] = {}
            try:
                count = segment_chunked(
                    model,
                    path,
                    labels_path,
                    probs_path,
                    channel_axis=args.channel_axis,
                    chunks=chunks,
                    margin=args.labels_margin,
                    config=config,
                    progress=None if args.quiet or client is not None else dask_bar,
                    info=info,
                )
            except (FileNotFoundError, ValueError) as err:
                raise CommandError(f"{path}: {err}") from err
            written = ", ".join(str(n) for n in (labels_path, probs_path) if n is not None)
            shape = tuple(open_chunked(labels_path).data.shape)
            note = _link_note(info, shape, "".join(info.get("axes", [])))
            print(f"{path.name}: {count} objects{note} -> {written}")
    return 0
