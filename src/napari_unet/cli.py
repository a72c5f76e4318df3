"""The ``napari-unet`` command line.

Each sub-command has an ``_add_<name>(subparsers)`` function that declares its
arguments and sets ``func`` to the function that runs it. ``main`` returns the
process exit code: 0 on success, 1 on bad input (with a one-line message on
stderr naming the problem), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import __version__

__all__ = ["main"]


def _resolve_model(name_or_path: str) -> Path:
    """A model file path, or the file of a bundled model (``nuclei``, ...)."""
    from .pretrained import resolve_model as resolve

    return resolve(name_or_path)


def _recommended_threshold(metadata: dict) -> float:
    from .pretrained import recommended_threshold as recommended

    return recommended(metadata)


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


# ---------------------------------------------------------------------------
# train / predict / info: the training engine, prediction and model files
# ---------------------------------------------------------------------------


def _files_by_stem(folder: str, option: str) -> dict[str, Path]:
    """Image files of a folder (or one file) keyed by name without suffix."""
    from .io import list_images

    try:
        files = list_images(folder)
    except (FileNotFoundError, ValueError) as err:
        raise CommandError(f"{option}: {err}") from err
    if not files:
        raise CommandError(f"{option}: no image files in {folder}")
    table: dict[str, Path] = {}
    for path in files:
        if path.stem in table:
            raise CommandError(
                f"{option}: two files with the same name: {table[path.stem].name}, {path.name}"
            )
        table[path.stem] = path
    return table


def _read(path: Path) -> np.ndarray:
    from .io import read_image

    try:
        return read_image(path)
    except (FileNotFoundError, ValueError) as err:
        raise CommandError(str(err)) from err


def _is_colour(path: Path, array: np.ndarray) -> bool:
    """A PNG/JPEG-style (Y, X, 3|4) colour image (TIFF stacks are never guessed)."""
    return (
        path.suffix.lower() not in (".tif", ".tiff")
        and array.ndim == 3
        and array.shape[-1] in (3, 4)
    )


def _read_labels(path: Path, binary: bool) -> np.ndarray:
    labels = _read(path)
    if _is_colour(path, labels):
        colour = labels[..., :3]
        if not (colour == colour[..., :1]).all():
            raise CommandError(f"{path} is a colour image, expected a label image")
        labels = colour[..., 0]
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise CommandError(f"{path} (dtype {labels.dtype}) is not a label image of integers")
    if labels.ndim not in (2, 3):
        raise CommandError(f"{path} has shape {labels.shape}, expected (Y, X) or (Z, Y, X)")
    if binary:
        from .metrics import mask_to_instances

        # Per plane: cells of neighbouring sections are different profiles.
        planes = labels.reshape(-1, *labels.shape[-2:])
        labels = np.stack([mask_to_instances(p) for p in planes]).reshape(labels.shape)
    elif labels.size and labels.min() < 0:
        raise CommandError(f"{path} contains negative labels")
    return labels.astype(np.int64 if labels.max(initial=0) > 2**31 - 1 else np.int32)


def _train_image(path: Path, labels_shape: tuple[int, ...]) -> np.ndarray:
    """An image as (Y, X), (C, Y, X), (Z, Y, X) or (C, Z, Y, X) matching its labels."""
    image = _read(path)
    if _is_colour(path, image):
        image = np.moveaxis(image[..., :3], -1, 0)
        if (image == image[:1]).all():
            image = image[0]  # grey saved as RGB
    elif image.ndim == len(labels_shape) + 1 and image.shape[:-1] == labels_shape:
        image = np.moveaxis(image, -1, 0)  # channels last (TIFF)
    if image.shape[-len(labels_shape) :] != labels_shape:
        raise CommandError(
            f"{path} (shape {image.shape}) does not match its labels (shape {labels_shape})"
        )
    return image


def _train_samples(
    images: str, labels: str, masks: str | None, binary: bool, prefix: str = ""
) -> tuple[list, list[str]]:
    from .training import Sample

    image_files = _files_by_stem(images, f"--{prefix}images")
    label_files = _files_by_stem(labels, f"--{prefix}labels")
    mask_files = _files_by_stem(masks, "--masks") if masks else {}
    problems = []
    if set(image_files) - set(label_files):
        names = sorted(set(image_files) - set(label_files))
        problems.append(f"no labels for {', '.join(image_files[n].name for n in names[:5])}")
    if set(label_files) - set(image_files):
        names = sorted(set(label_files) - set(image_files))
        problems.append(f"no image for labels {', '.join(label_files[n].name for n in names[:5])}")
    if problems:
        raise CommandError(
            f"--{prefix}images and --{prefix}labels are matched by file name: "
            + "; ".join(problems)
        )
    samples = []
    for stem in sorted(image_files):
        label_array = _read_labels(label_files[stem], binary)
        image = _train_image(image_files[stem], label_array.shape)
        mask = None
        if stem in mask_files:
            mask = _read(mask_files[stem]) != 0
            if mask.shape != label_array.shape:
                raise CommandError(
                    f"{mask_files[stem]} (shape {mask.shape}) does not match its labels "
                    f"(shape {label_array.shape})"
                )
        samples.append(Sample(image, label_array, mask))
    channels = {1 if s.image.ndim == s.labels.ndim else s.image.shape[0] for s in samples}
    if len(channels) > 1:
        raise CommandError(f"--{prefix}images have different channel counts: {sorted(channels)}")
    return samples, sorted(image_files)


def _add_train(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model on annotated images",
        description=(
            "Train a U-Net on images and instance label images, matched by file name.\n"
            "Writes MODEL (the best model by validation, or the last without validation)\n"
            "and MODEL's .last file (the last model with the optimiser state, for --resume).\n"
            "Ctrl-C stops after the current iteration and keeps the model trained so far;\n"
            "a second Ctrl-C aborts at once (the last checkpoint on disk stays intact)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--images", required=True, metavar="DIR", help="training images")
    data.add_argument("--labels", required=True, metavar="DIR", help="instance label images")
    data.add_argument(
        "--masks", metavar="DIR", help="annotated-pixel masks (non-zero = annotated)"
    )
    data.add_argument("--val-images", metavar="DIR", help="validation images")
    data.add_argument("--val-labels", metavar="DIR", help="validation label images")
    data.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        metavar="F",
        help="hold out this share of the training planes for validation (default 0)",
    )
    data.add_argument(
        "--binary-labels",
        action="store_true",
        help="labels are binary (e.g. ISBI 2012: 255 = cell, 0 = membrane): instances are "
        "their 4-connected components",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="MODEL", help="model file (.safetensors)")
    out.add_argument("--overwrite", action="store_true", help="replace existing model files")
    arch = parser.add_argument_group("model (ignored with --resume)")
    # Checked when the model is built, so that --help does not import PyTorch.
    arch.add_argument(
        "--model", default="unet", help="architecture: unet (default) or unetplusplus"
    )
    arch.add_argument("--depth", type=int, default=4, help="poolings (default 4, the paper)")
    arch.add_argument("--base-channels", type=int, default=64, help="default 64 (the paper)")
    arch.add_argument(
        "--padding",
        default="valid",
        choices=("valid", "same"),
        help="U-Net only: valid (the paper, default) or same; U-Net++ is always same",
    )
    arch.add_argument("--batch-norm", action="store_true", help="batch normalisation")
    arch.add_argument(
        "--classes",
        type=int,
        default=3,
        choices=(2, 3),
        help="3: background, cell, separating border (default); 2: background, cell",
    )
    opt = parser.add_argument_group("training")
    opt.add_argument("--iterations", type=int, default=1000, metavar="N")
    opt.add_argument("--tile", type=int, metavar="N", help="input tile side (default 572)")
    opt.add_argument("--batch-size", type=int, default=1)
    opt.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    opt.add_argument("--lr", type=float, help="learning rate (default 0.01 SGD, 0.001 Adam)")
    opt.add_argument(
        "--schedule", default="constant", choices=("constant", "cosine", "poly", "step")
    )
    opt.add_argument(
        "--loss",
        default="auto",
        choices=("auto", "ce", "dice", "hybrid"),
        help="auto (default): weighted cross-entropy for U-Net, the hybrid loss on every "
        "head for U-Net++",
    )
    opt.add_argument("--val-every", type=int, default=100, metavar="N")
    opt.add_argument("--no-augment", action="store_true", help="no augmentation at all")
    opt.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    opt.add_argument(
        "--resume",
        metavar="MODEL",
        help="start from this model file: continue its run if it is an unfinished .last "
        "checkpoint, else fine-tune its weights",
    )
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--quiet", action="store_true", help="no progress bar")
    opt.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel training on the processes torchrun starts (torchrun "
        "--nproc_per_node N -m napari_unet.cli train ... --distributed); --batch-size is "
        "the global batch, split across them; only rank 0 prints and writes files",
    )
    parser.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import signal

    from ._modelfile import ModelFileError, build_model, load_checkpoint
    from .training import TrainConfig, checkpoint_paths, train

    if bool(args.val_images) != bool(args.val_labels):
        raise CommandError("--val-images and --val-labels go together")
    main_rank = True
    if args.distributed:
        from . import distributed

        if not (distributed.is_distributed() or distributed.env_ready()):
            raise CommandError(
                "--distributed needs the torchrun environment: start with `torchrun "
                "--nproc_per_node N -m napari_unet.cli train ... --distributed`"
            )
        # Only rank 0 prints; every rank checks the same things and fails alike.
        main_rank = distributed.rank() == 0
        args.quiet = args.quiet or not main_rank
    out = Path(args.out)
    if not out.parent.is_dir():
        raise CommandError(f"--out: folder {out.parent} does not exist")
    existing = [str(p) for p in checkpoint_paths(out) if p.exists()]
    if existing and not args.overwrite:
        raise CommandError(f"{', '.join(existing)} exists; pass --overwrite to replace it")
    augment = not args.no_augment
    try:
        config = TrainConfig(
            iterations=args.iterations,
            tile_shape=None if args.tile is None else (args.tile, args.tile),
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            lr=args.lr,
            lr_schedule=args.schedule,
            loss=args.loss,
            border_class=args.classes == 3,
            elastic=augment,
            flips=augment,
            grey_values=augment,
            val_every=args.val_every,
            val_fraction=args.val_fraction,
            checkpoint_every=args.val_every,
            seed=args.seed,
            device=args.device,
            distributed=args.distributed,
        )
    except ValueError as err:
        raise CommandError(str(err)) from err

    samples, names = _train_samples(args.images, args.labels, args.masks, args.binary_labels)
    val_samples, val_names = None, []
    if args.val_images:
        val_samples, val_names = _train_samples(
            args.val_images, args.val_labels, None, args.binary_labels, prefix="val-"
        )

    resume = False
    if args.resume:
        try:
            _, stored, optimizer_state = load_checkpoint(_resolve_model(args.resume))
        except (FileNotFoundError, ModelFileError) as err:
            raise CommandError(f"--resume: {err}") from err
        previous = stored.get("training") or {}
        resume = optimizer_state is not None and not previous.get("finished", True)
        what = "resuming" if resume else "fine-tuning"
        if main_rank:
            print(f"{what} from {args.resume} ({previous.get('iteration', '?')} iterations)")
        model = _resolve_model(args.resume)
    else:
        first = samples[0]
        channels = 1 if first.image.ndim == first.labels.ndim else int(first.image.shape[0])
        _torch_seed(args.seed)  # the initial weights are part of a reproducible run
        try:
            arguments = {
                "in_channels": channels,
                "num_classes": args.classes,
                "depth": args.depth,
                "base_channels": args.base_channels,
                "batch_norm": args.batch_norm,
            }
            if args.model == "unet":
                arguments["padding"] = args.padding
            model = build_model(args.model, arguments)
        except ModelFileError as err:
            raise CommandError(str(err)) from err

    stop = {"requested": False}

    def on_sigint(signum, frame):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        print(
            "\nstopping after this iteration (Ctrl-C again to abort now)",
            file=sys.stderr,
            flush=True,
        )

    bar = _ProgressBar(args.quiet)
    try:
        previous_handler = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: Ctrl-C then raises KeyboardInterrupt
        previous_handler = None
    try:
        result = train(
            samples,
            model=model,
            config=config,
            val_samples=val_samples,
            out=out,
            overwrite=args.overwrite,
            resume=resume,
            progress=bar.train_event,
            cancel=lambda: stop["requested"],
            data_info={
                "images": str(args.images),
                "labels": str(args.labels),
                "files": names,
                "val_files": val_names,
                "binary_labels": bool(args.binary_labels),
            },
        )
    except (ValueError, FileExistsError, FileNotFoundError, FloatingPointError) as err:
        raise CommandError(str(err)) from err
    finally:
        bar.close()
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
        if args.distributed:
            from . import distributed

            distributed.cleanup()
    if not main_rank:
        return 130 if result.cancelled else 0

    best = result.best
    summary = f"{result.iterations} iterations"
    if best:
        summary += f"; best {best['monitor']} {best['value']:.4f} at iteration {best['iteration']}"
        extra = {k: v for k, v in best["metrics"].items() if k != best["monitor"]}
        summary += "".join(f", {k} {v:.4f}" for k, v in extra.items())
    print(f"wrote {result.best_path} and {result.last_path} ({summary})")
    if result.cancelled:
        print(
            f"napari-unet train: interrupted after {result.iterations} iterations; "
            "the model trained so far is saved",
            file=sys.stderr,
        )
        return 130
    return 0


def _torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


class _ProgressBar:
    """A tqdm bar on stderr for train and predict events (or nothing with --quiet)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None
        self.stage = None

    def _bar(self, stage: str, total: int, unit: str, desc: str):
        if self.quiet:
            return None
        if self.bar is None or self.stage != stage or self.bar.total != total:
            from tqdm import tqdm

            self.close()
            self.bar = tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, leave=True)
            self.stage = stage
        return self.bar

    def train_event(self, event) -> None:
        if event.stage == "validate":
            return  # short; the next iteration's bar update shows the metrics
        unit = "image" if event.stage == "prepare" else "it"
        desc = "weight maps" if event.stage == "prepare" else "train"
        bar = self._bar(event.stage, event.total, unit, desc)
        if bar is None:
            return
        bar.update(event.done - bar.n)
        if event.stage == "train":
            info = event.info
            shown = {"loss": f"{info['loss']:.4f}"}
            for key in ("val_loss", "pixel_error", "rand_error"):
                if key in info:
                    shown[key] = f"{info[key]:.4f}"
            bar.set_postfix(shown, refresh=False)

    def segment_event(self, desc: str):
        """A progress callback for :func:`napari_unet.segment.segment`: a bar of tiles."""

        def update(event) -> None:
            if event.stage != "predict":
                return
            bar = self._bar(desc, event.total, "tile", desc)
            if bar is not None:
                bar.update(event.done - bar.n)

        return update

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _add_predict(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment images with a trained model",
        description=(
            "Predict every INPUT (files or folders of TIFF/PNG/... images; TIFF stacks are\n"
            "predicted plane by plane) and write DIR/<name>.tif (instance labels) and, with\n"
            "--probabilities, DIR/probabilities/<name>.tif (float32 class probabilities,\n"
            "classes first). `napari-unet evaluate --pred DIR --gt LABELS` then pairs the\n"
            "label images with the ground truth by name. Existing outputs are never\n"
            "replaced without --overwrite.\n\n"
            "Chunked mode, for images larger than memory: when an INPUT is a Zarr or\n"
            "OME-Zarr store (the first multiscale level is read), a TIFF over 1 GiB, or\n"
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
    parser.add_argument("--tta", action="store_true", help="average over 8 rotations/flips")
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
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    chunked = parser.add_argument_group("chunked mode (Zarr, large TIFF)")
    chunked.add_argument(
        "--chunks",
        metavar="N[,N]",
        help="spatial chunk side(s) in pixels for prediction (default: the input's chunks, "
        "clamped to 256-2048; 512 for TIFF)",
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
    parser.set_defaults(func=_run_predict)


def _predict_settings(args: argparse.Namespace):
    """The model (loaded once) and the pipeline settings of a predict command."""
    from .segment import SegmentConfig, load_segmenter

    try:
        model, meta = load_segmenter(_resolve_model(args.model))
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
            probabilities=args.probabilities,
        )
    except ValueError as err:
        raise CommandError(str(err)) from err
    if config.level is not None:
        # Checked before any image is read: a wrong level fails at once.
        try:
            load_segmenter(model, level=config.level)
        except ValueError as err:
            raise CommandError(f"--level: {err}") from err
    return (model, meta), config


def _run_predict(args: argparse.Namespace) -> int:
    from .io import list_images, write_image
    from .progress import Cancelled
    from .segment import segment

    model, config = _predict_settings(args)
    if _wants_chunked(args):
        return _run_predict_chunked(args, model, config)
    inputs: list[Path] = []
    for item in args.inputs:
        try:
            found = list_images(item)
        except (FileNotFoundError, ValueError) as err:
            raise CommandError(str(err)) from err
        if not found:
            raise CommandError(f"no image files in {item}")
        inputs.extend(found)
    stems = [p.stem for p in inputs]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise CommandError(f"two inputs would write the same outputs: {', '.join(duplicates)}")

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} is a file, expected a folder")
    targets = []
    for path in inputs:
        names = [out / f"{path.stem}.tif"]
        if args.probabilities:
            names.append(out / "probabilities" / f"{path.stem}.tif")
        targets.append(names)
    # Check every output before computing anything: never a half-done batch.
    existing = [str(p) for names in targets for p in names if p.exists()]
    if existing and not args.overwrite:
        shown = ", ".join(existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise CommandError(f"{shown} exists; pass --overwrite to replace")
    out.mkdir(parents=True, exist_ok=True)
    if args.probabilities:
        (out / "probabilities").mkdir(exist_ok=True)

    bar = _ProgressBar(args.quiet)
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
            write_image(names[0], labels)
            if args.probabilities:
                write_image(names[1], result.probabilities)
            count = len(np.unique(labels)) - (1 if (labels == 0).any() else 0)
            print(f"{path.name}: {count} objects -> {', '.join(str(n) for n in names)}")
    finally:
        bar.close()
    return 0


def _read_for_model(
    path: Path, channels: int, channel_axis: int | None
) -> tuple[np.ndarray, int | None]:
    """An image file and its channel axis (colour PNG/JPEG files are arranged for the model)."""
    from .axes import colour_to_channels

    image = _read(path)
    if _is_colour(path, image) and channel_axis is None:
        try:
            return colour_to_channels(image, channels)
        except ValueError as err:
            raise CommandError(f"{path} is {err}") from err
    return image, channel_axis


# -- predict, chunked mode: Zarr / OME-Zarr / large TIFF through Dask ----------------------

# TIFFs larger than this (decoded) are predicted chunk by chunk.
_IN_MEMORY_LIMIT = 2**30


def _wants_chunked(args: argparse.Namespace) -> bool:
    from .io import is_zarr

    if args.chunks or args.scheduler or Path(args.out).suffix.lower() == ".zarr":
        return True
    return any(
        is_zarr(item) or _tiff_nbytes(Path(item)) > _IN_MEMORY_LIMIT for item in args.inputs
    )


def _tiff_nbytes(path: Path) -> int:
    """Decoded size of a TIFF file's first series (0 for anything else)."""
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return 0
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return int(np.prod(series.shape)) * np.dtype(series.dtype).itemsize
    except (OSError, ValueError):
        return 0  # read_image reports the problem


def _chunked_inputs(items: Sequence[str]) -> list[Path]:
    from .io import is_zarr, list_images

    inputs: list[Path] = []
    for item in items:
        if is_zarr(item):
            if not Path(item).exists():
                raise CommandError(f"no such file or folder: {item}")
            inputs.append(Path(item))
            continue
        try:
            found = list_images(item)
        except (FileNotFoundError, ValueError) as err:
            raise CommandError(str(err)) from err
        tiffs = [p for p in found if p.suffix.lower() in (".tif", ".tiff")]
        if not tiffs:
            raise CommandError(f"no Zarr store or TIFF file in {item} (chunked mode)")
        inputs.extend(tiffs)
    return inputs


def _parse_chunks(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise CommandError(f"--chunks must be N or N,N (positive pixels), got {text!r}")
    return (sizes[0], sizes[-1])


def _chunked_targets(args: argparse.Namespace, inputs: list[Path]) -> tuple[Path, list]:
    """The output folder and (labels, probabilities or None) stores, checked before any work."""
    out = Path(args.out)
    if out.suffix.lower() == ".zarr":
        if len(inputs) != 1:
            raise CommandError(
                f"--out {out} names one output store but there are {len(inputs)} inputs; "
                "give a folder"
            )
        folder, stems = out.parent, [out.stem]
    else:
        if out.exists() and not out.is_dir():
            raise CommandError(f"--out {out} is a file, expected a folder")
        folder, stems = out, [p.name[: -len(p.suffix)] if p.suffix else p.name for p in inputs]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise CommandError(f"two inputs would write the same outputs: {', '.join(duplicates)}")
    targets = [
        (
            folder / f"{stem}.zarr",
            folder / "probabilities" / f"{stem}.zarr" if args.probabilities else None,
        )
        for stem in stems
    ]
    sources = {p.resolve() for p in inputs}
    for names in targets:
        for target in names:
            if target is not None and target.resolve() in sources:
                raise CommandError(f"{target} is an input; choose another --out")
    existing = [str(p) for names in targets for p in names if p is not None and p.exists()]
    if existing and not args.overwrite:
        shown = ", ".join(existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise CommandError(f"{shown} exists; pass --overwrite to replace")
    return folder, targets


def _run_predict_chunked(args: argparse.Namespace, model, config) -> int:
    from .segment import dask_scheduler, segment_chunked

    try:
        import zarr  # noqa: F401
    except ImportError as err:
        raise CommandError(
            f"chunked mode (Zarr, large TIFF) needs zarr ({err}); pip install 'zarr>=3'"
        ) from err
    if args.tta:
        raise CommandError("--tta is not available in chunked mode (Zarr, large TIFF)")
    inputs = _chunked_inputs(args.inputs)
    chunks = _parse_chunks(args.chunks)
    if args.labels_margin < 1:
        raise CommandError(f"--labels-margin must be >= 1, got {args.labels_margin}")
    folder, targets = _chunked_targets(args, inputs)
    folder.mkdir(parents=True, exist_ok=True)
    if args.probabilities:
        (folder / "probabilities").mkdir(exist_ok=True)

    with contextlib.ExitStack() as stack:
        try:
            client = stack.enter_context(dask_scheduler(args.scheduler))
        except ValueError as err:
            raise CommandError(f"--scheduler {err}") from err
        for path, (labels_path, probs_path) in zip(inputs, targets, strict=True):
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
                    progress=None if args.quiet or client is not None else _dask_bar,
                )
            except (FileNotFoundError, ValueError) as err:
                raise CommandError(f"{path}: {err}") from err
            written = ", ".join(str(n) for n in (labels_path, probs_path) if n is not None)
            print(f"{path.name}: {count} objects -> {written}")
    return 0


def _dask_bar(what: str):
    """A Dask progress bar on stderr, titled ``what``."""
    from dask.diagnostics import ProgressBar

    print(what, file=sys.stderr, flush=True)
    return ProgressBar(out=sys.stderr)


def _add_info(subparsers) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show what a model file holds, or (no MODEL) which distribution is installed",
        description="Print the metadata of a model file: architecture, classes, "
        "normalisation and how it was trained. Reads the file safely (no code runs). "
        "Without MODEL: which installed distribution provides the napari_unet package "
        "(napari-unet-cells; a warning if the unrelated napari-unet claims it too).",
    )
    parser.add_argument("model", metavar="MODEL", nargs="?", help="model file (.safetensors)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON metadata")
    parser.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    import json

    if args.model is None:
        from .distribution import installation_report

        report, ok = installation_report()
        print(report)
        return 0 if ok else 1
    from ._modelfile import ModelFileError, load_model

    try:
        model, meta = load_model(_resolve_model(args.model))
    except (FileNotFoundError, ModelFileError) as err:
        raise CommandError(str(err)) from err
    if args.json:
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0
    params = sum(p.numel() for p in model.parameters())
    arguments = ", ".join(f"{k}={v}" for k, v in meta["arguments"].items())
    lines = [
        f"file:          {args.model}",
        f"architecture:  {meta['architecture']} ({arguments})",
        f"parameters:    {params:,}",
        f"classes:       {', '.join(meta.get('classes') or []) or meta.get('num_classes')}",
    ]
    norm = meta.get("normalization") or {}
    if norm:
        text = f"{norm.get('method', 'percentile')} {norm.get('low')}-{norm.get('high')}, "
        text += f"scope {norm.get('scope')}"
        if norm.get("lo") is not None:
            text += f", lo {norm['lo']}, hi {norm['hi']}"
        lines.append(f"normalisation: {text}")
    lines.append(f"created:       {meta.get('created')} (napari-unet {meta['package_version']})")
    training = meta.get("training")
    if training:
        state = (
            "finished"
            if training.get("finished")
            else ("cancelled" if training.get("cancelled") else "in progress")
        )
        config = training.get("config") or {}
        lines.append(
            f"training:      {training.get('iteration')} of {config.get('iterations')} "
            f"iterations ({state}), {config.get('optimizer')} lr {config.get('lr')}, "
            f"tile {training.get('tile_shape')}, seed {config.get('seed')}, "
            f"{training.get('elapsed_s')} s on {training.get('device')}"
        )
        data = training.get("data") or {}
        if data.get("files"):
            lines.append(
                f"data:          {len(data['files'])} image(s) from {data.get('images', '?')}"
                + (f", {len(data['val_files'])} for validation" if data.get("val_files") else "")
            )
        if training.get("best"):
            best = training["best"]
            scores = ", ".join(f"{k} {v:.4f}" for k, v in best["metrics"].items())
            lines.append(f"best:          iteration {best['iteration']}: {scores}")
        if training.get("fine_tuned_from"):
            origin = training["fine_tuned_from"]
            lines.append(f"fine-tuned:    from {origin.get('file')} ({origin.get('created')})")
    print("\n".join(lines))
    return 0


# train and predict first in --help, info last.
_COMMANDS[0:0] = [_add_train, _add_predict]
_COMMANDS.append(_add_info)


# ---------------------------------------------------------------------------
# demo: napari with the synthetic sample data and the four widgets docked
# ---------------------------------------------------------------------------


def _add_demo(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
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
    parser.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    try:
        import napari
    except ImportError as err:
        raise CommandError(
            f"napari is not installed ({err}); "
            "install it with: pip install 'napari-unet-cells[demo]'"
        ) from err
    from ._widgets._demo import setup_demo

    if args.screenshot and not Path(args.screenshot).resolve().parent.is_dir():
        raise CommandError(f"--screenshot: folder {Path(args.screenshot).parent} does not exist")
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


_COMMANDS.append(_add_demo)


# ---------------------------------------------------------------------------
# export: bioimage.io model packages and ONNX
# ---------------------------------------------------------------------------


def _add_export(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
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
    parser.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from ._modelfile import ModelFileError, load_model

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CommandError(f"{out} exists; pass --overwrite to replace it")
    if not out.resolve().parent.is_dir():
        raise CommandError(f"--out: folder {out.parent} does not exist")
    if args.format == "onnx" and out.suffix.lower() != ".onnx":
        raise CommandError(f"--out {out}: an ONNX export needs a file name ending in .onnx")
    try:
        model, meta = load_model(_resolve_model(args.model))
    except (FileNotFoundError, ModelFileError) as err:
        raise CommandError(f"MODEL: {err}") from err
    sample = None
    if args.sample:
        from .io import read_image

        try:
            sample = read_image(args.sample)
        except (OSError, ValueError) as err:
            raise CommandError(f"--sample: {err}") from err
        if (
            sample.ndim == model.spatial_dims + 1
            and sample.shape[-1] in (3, 4)
            and sample.shape[0] != model.in_channels
        ):
            # Colour images are read (Y, X, C); the model wants channels first.
            sample = np.moveaxis(sample, -1, 0)
    from . import export

    try:
        if args.format == "onnx":
            path = export.export_onnx((model, meta), out, overwrite=args.overwrite)
        else:
            weights = ("pytorch_state_dict", "torchscript") + (
                ("onnx",) if args.onnx_weights else ()
            )
            path = export.export_bioimageio(
                (model, meta),
                out,
                name=args.name,
                description=args.description,
                authors=args.author,
                license=args.license,
                sample=sample,
                weights=weights,
                tags=args.tag or (),
                overwrite=args.overwrite,
                validate=not args.no_validate,
                test=args.test,
            )
    except (ImportError, FileExistsError, FileNotFoundError, ValueError, RuntimeError) as err:
        raise CommandError(str(err)) from err
    print(f"wrote {path}")
    return 0


_COMMANDS.append(_add_export)


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
