"""Checks on model files and packages before anything is built or read in full.

A model file is untrusted input: its metadata decides which network is built
and how large it is, and its tensor table says where the weights lie. This
module checks all of that from the header alone, so that a broken or hostile
file ends in one :class:`ModelFileError` naming the file, the key, what was
found and what was expected, before any large allocation:

* :func:`validate_metadata`: the JSON document (types, ranges, versions) of
  the keys napari-unet reads (:data:`KNOWN_KEYS`). Other keys are kept and
  never read; put extensions under an ``x_`` prefix (e.g. ``x_mylab``) so they
  cannot clash with keys a later version adds.
* :func:`parameter_count` and :func:`check_budget`: the parameters an
  architecture implies, in closed form for the U-Net and U-Net++, refused above
  :func:`max_parameters` (``NAPARI_UNET_MAX_PARAMETERS``, default 250 M, 1 GB
  of float32 weights; the paper's U-Net has 31 M).
* The tensor table and a stored optimiser state are checked by
  :mod:`napari_unet.tensortable`.
* :func:`check_zip_members` and :func:`check_member_name`: bioimage.io
  packages (member names, count, sizes, compression ratio) before anything in
  them is read.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import zipfile
from collections.abc import Mapping
from typing import Any

from .errors import InputError
from .models import UNet, UNetPlusPlus
from .models.shapes import pool_kernels_for_spacing

__all__ = [
    "KNOWN_KEYS",
    "MAX_HEADER_BYTES",
    "MAX_PACKAGE_MEMBERS",
    "MAX_RDF_BYTES",
    "ModelFileError",
    "check_budget",
    "check_member_name",
    "check_zip_members",
    "max_parameters",
    "parameter_count",
    "validate_arguments",
    "validate_metadata",
]

#: The largest safetensors header (JSON) read; real ones are tens of KB.
MAX_HEADER_BYTES = 16 * 2**20
#: Members of a package zip; an export has about ten.
MAX_PACKAGE_MEMBERS = 1000
#: Size of ``rdf.yaml``; an export's is a few KB.
MAX_RDF_BYTES = 2**20
#: Members larger than this must not expand more than :data:`MAX_COMPRESSION_RATIO` times
#: (float32 weights hardly compress; a zip bomb expands a thousandfold).
_RATIO_FLOOR = 16 * 2**20
MAX_COMPRESSION_RATIO = 100
_DEFAULT_MAX_PARAMETERS = 250_000_000
_MAX_INT = 2**16  # channels, classes: a sanity range before the budget
_MAX_DEPTH = 100  # beyond any real network; the budget decides below it


class ModelFileError(InputError):
    """A model file cannot be read: not a napari-unet file, corrupt, unsafe or mismatched.

    An :class:`~napari_unet.errors.InputError` (so a ``ValueError``, exit code 3 on
    the command line).
    """


# -- small typed checks ------------------------------------------------------------------------


def _fail(source: object, key: str, found: Any, expected: str) -> ModelFileError:
    shown = repr(found)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ModelFileError(f"{source}: invalid {key}: found {shown}, expected {expected}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(source: object, key: str, value: Any, low: int, high: int | None = None) -> None:
    if not _is_int(value) or value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise _fail(source, key, value, f"an integer {span}")


def _number(source: object, key: str, value: Any, low: float, high: float, what: str) -> None:
    if not _is_number(value) or not low <= value <= high:
        raise _fail(source, key, value, what)


def _mapping(source: object, key: str, value: Any, optional: bool = True) -> Mapping:
    if value is None and optional:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(source, key, value, "a JSON object" + (" or null" if optional else ""))
    return value


def _strings(source: object, key: str, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(source, key, value, "a list of strings")


def _typed(source: object, key: str, value: Any, types: tuple, what: str) -> None:
    """None, or an instance of ``types`` (a bool is no number here)."""
    if value is None:
        return
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise _fail(source, key, value, what)


# -- architecture arguments and budget ---------------------------------------------------------

_COMMON_ARGUMENTS = ("in_channels", "num_classes", "depth", "base_channels")
# Constructor defaults of the built-in architectures (arguments a file may leave out).
_DEFAULTS = {
    name: {p.name: p.default for p in inspect.signature(cls).parameters.values()}
    for name, cls in (("unet", UNet), ("unetplusplus", UNetPlusPlus))
}


def validate_arguments(architecture: str, arguments: Any, *, source: object = "model") -> dict:
    """Check the constructor arguments of a built-in architecture; return them with defaults.

    Parameters
    ----------
    architecture : str
        ``"unet"`` or ``"unetplusplus"``; other (registered) names are only
        checked to be a JSON object with string keys.
    arguments : object
        The stored ``arguments``.
    source : object
        Named in error messages (the file).

    Raises
    ------
    ModelFileError
        Naming the argument, the value found and the range expected.
    """
    if not isinstance(arguments, Mapping):
        raise _fail(source, "'arguments'", arguments, "a JSON object of constructor arguments")
    if architecture not in _DEFAULTS:
        return dict(arguments)
    defaults = _DEFAULTS[architecture]
    unknown = sorted(set(arguments) - set(defaults))
    if unknown:
        raise ModelFileError(
            f"{source}: 'arguments' of {architecture!r} has unknown key(s) "
            f"{', '.join(map(repr, unknown))}; expected some of {', '.join(defaults)}"
        )
    args = {**defaults, **arguments}
    for name in _COMMON_ARGUMENTS:
        high = _MAX_DEPTH if name == "depth" else _MAX_INT
        _int(source, f"arguments.{name}", args[name], 1, high)
    if args["spatial_dims"] not in (2, 3) or isinstance(args["spatial_dims"], bool):
        raise _fail(source, "arguments.spatial_dims", args["spatial_dims"], "2 or 3")
    _number(source, "arguments.dropout", args["dropout"], 0.0, 1.0, "a number in [0, 1)")
    if args["dropout"] >= 1.0:
        raise _fail(source, "arguments.dropout", args["dropout"], "a number in [0, 1)")
    if not isinstance(args["batch_norm"], bool):
        raise _fail(source, "arguments.batch_norm", args["batch_norm"], "true or false")
    if architecture == "unet":
        if args["padding"] not in ("valid", "same"):
            raise _fail(source, "arguments.padding", args["padding"], "'valid' or 'same'")
        spacing = args.get("spacing")
        if spacing is not None and (
            not isinstance(spacing, list | tuple)
            or len(spacing) != args["spatial_dims"]
            or not all(_is_number(v) and v > 0 for v in spacing)
        ):
            raise _fail(
                source,
                "arguments.spacing",
                spacing,
                f"null or {args['spatial_dims']} positive voxel sizes (one per spatial axis)",
            )
    else:
        if not isinstance(args["deep_supervision"], bool):
            raise _fail(
                source, "arguments.deep_supervision", args["deep_supervision"], "true or false"
            )
        level = args["output_level"]
        if level is not None:
            _int(source, "arguments.output_level", level, 1, args["depth"])
    return args


def _block(s: int, cin: int, cout: int, bn: bool) -> int:
    # Two 3**s convolutions; a bias each, or (without bias) a batch norm's weight and bias each.
    return (cin + cout) * cout * 3**s + (4 if bn else 2) * cout


def _upconv(s: int, cin: int, cout: int) -> int:
    return cin * cout * 2**s + cout


def parameter_count(architecture: str, arguments: Mapping[str, Any]) -> int | None:
    """Parameters of a built-in architecture, in closed form (exact Python integers).

    Parameters
    ----------
    architecture : str
        ``"unet"`` or ``"unetplusplus"``.
    arguments : mapping
        Checked constructor arguments (see :func:`validate_arguments`).

    Returns
    -------
    count : int or None
        The number of trainable parameters (what ``sum(p.numel() for p in
        model.parameters())`` gives), or None for other architectures.

    Examples
    --------
    >>> parameter_count("unet", {"in_channels": 1, "num_classes": 2})
    31030658
    """
    if architecture not in _DEFAULTS:
        return None
    a = {**_DEFAULTS[architecture], **arguments}
    s, d, bn, k = a["spatial_dims"], a["depth"], a["batch_norm"], a["num_classes"]
    c = [a["base_channels"] * 2**level for level in range(d + 1)]
    head = c[0] * k + k
    total = _block(s, a["in_channels"], c[0], bn)
    total += sum(_block(s, c[i], c[i + 1], bn) for i in range(d))
    if architecture == "unet":
        # The up-convolution's kernel is the pooling window of its level (anisotropic volumes).
        spacing = a.get("spacing")
        windows = [2**s] * d
        if spacing is not None:
            windows = [math.prod(k) for k in pool_kernels_for_spacing(spacing, d)]
        total += sum(
            c[i + 1] * c[i] * windows[i] + c[i] + _block(s, 2 * c[i], c[i], bn) for i in range(d)
        )
        return total + head
    for i in range(d):
        for j in range(1, d - i + 1):
            total += _upconv(s, c[i + 1], c[i]) + _block(s, (j + 1) * c[i], c[i], bn)
    return total + head * (d if a["deep_supervision"] else 1)


def max_parameters() -> int:
    """The parameter budget: ``NAPARI_UNET_MAX_PARAMETERS`` or 250 M (1 GB of float32)."""
    value = os.environ.get("NAPARI_UNET_MAX_PARAMETERS", "")
    try:
        return int(float(value)) if value.strip() else _DEFAULT_MAX_PARAMETERS
    except ValueError:
        return _DEFAULT_MAX_PARAMETERS


def _bytes(n: float) -> str:
    for unit, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}" if n < 1e18 else f"{n:.2e} bytes"
    return f"{int(n)} bytes"


def check_budget(
    architecture: str, arguments: Mapping[str, Any], *, source: object = "model"
) -> int | None:
    """Refuse an architecture whose parameters exceed :func:`max_parameters`.

    Returns
    -------
    count : int or None
        The parameters, or None if the architecture has no closed form.

    Raises
    ------
    ModelFileError
        With the numbers: what the arguments imply and the limit.
    """
    count = parameter_count(architecture, arguments)
    limit = max_parameters()
    if count is not None and count > limit:
        a = {**_DEFAULTS[architecture], **arguments}
        raise ModelFileError(
            f"{source}: {architecture} depth {a['depth']}, base_channels {a['base_channels']}, "
            f"{a['in_channels']} input channel(s), {a['num_classes']} class(es), "
            f"spatial_dims {a['spatial_dims']} implies {count:.3g} parameters "
            f"({_bytes(4 * count)} of float32 weights); the limit is {limit:.3g} parameters "
            f"({_bytes(4 * limit)}). Nothing was built. If you trust this file, raise the "
            "limit with the environment variable NAPARI_UNET_MAX_PARAMETERS"
        )
    return count


# -- metadata document -------------------------------------------------------------------------


def _check_normalization(source: object, value: Any, in_channels: Any) -> None:
    norm = _mapping(source, "'normalization'", value)
    if not norm:
        return
    if norm.get("method", "percentile") != "percentile":
        raise _fail(source, "normalization.method", norm.get("method"), "'percentile'")
    scope = norm.get("scope", "image")
    if scope not in ("image", "dataset", "none"):
        raise _fail(source, "normalization.scope", scope, "'image', 'dataset' or 'none'")
    low, high = norm.get("low", 1.0), norm.get("high", 99.8)
    _number(source, "normalization.low", low, 0.0, 100.0, "a percentile in [0, 100)")
    _number(source, "normalization.high", high, 0.0, 100.0, "a percentile in (0, 100]")
    if not low < high:
        raise _fail(source, "normalization.high", high, f"a percentile above low ({low})")
    values = [norm.get("lo"), norm.get("hi")]
    if scope == "dataset" or any(v is not None for v in values):
        for name, v in zip(("lo", "hi"), values, strict=True):
            if not isinstance(v, list) or not all(_is_number(x) for x in v):
                raise _fail(source, f"normalization.{name}", v, "a list of finite numbers")
            if _is_int(in_channels) and len(v) != in_channels:
                raise _fail(
                    source, f"normalization.{name}", v, f"one value per channel ({in_channels})"
                )


def _check_postprocessing(source: object, key: str, value: Any) -> None:
    post = _mapping(source, key, value)
    if "threshold" in post:
        t = post["threshold"]
        if not _is_number(t) or not 0.0 < t < 1.0:
            raise _fail(source, f"{key}.threshold", t, "a number in (0, 1)")
    if "method" in post and post["method"] not in ("watershed", "components", "seeded"):
        raise _fail(
            source, f"{key}.method", post["method"], "'watershed', 'components' or 'seeded'"
        )
    if post.get("level") is not None:
        _int(source, f"{key}.level", post["level"], 1)
    # The keywords of postprocess.probabilities_to_labels that a file may recommend.
    if post.get("seed_threshold") is not None:
        t = post["seed_threshold"]
        if not _is_number(t) or not 0.0 < t < 1.0:
            raise _fail(source, f"{key}.seed_threshold", t, "a number in (0, 1) or null")
    for name in ("min_size", "min_seed_size", "seed_erosion"):
        if post.get(name) is not None:
            _int(source, f"{key}.{name}", post[name], 0)
    if post.get("split_depth") is not None:
        _number(source, f"{key}.split_depth", post["split_depth"], 0.0, math.inf, "a number >= 0")
    for name in ("fill_holes", "tta"):
        if post.get(name) is not None and not isinstance(post[name], bool):
            raise _fail(source, f"{key}.{name}", post[name], "true or false")


_TRAINING_TYPES: dict[str, tuple[tuple, str]] = {
    "finished": ((bool,), "true or false"),
    "cancelled": ((bool,), "true or false"),
    "device": ((str,), "a string"),
    "started": ((str,), "a string"),
    "package_version": ((str,), "a string"),
    "elapsed_s": ((int, float), "a number of seconds"),
    "data": ((Mapping,), "a JSON object"),
    "metrics": ((Mapping,), "a JSON object"),
    "best": ((Mapping,), "a JSON object or null"),
    "fine_tuned_from": ((Mapping,), "a JSON object or null"),
}


def _check_training(source: object, value: Any) -> None:
    training = _mapping(source, "'training'", value)
    for key, (types, what) in _TRAINING_TYPES.items():
        _typed(source, f"training.{key}", training.get(key), types, what)
    for key in ("iteration", "planes", "val_planes"):
        if training.get(key) is not None:
            _int(source, f"training.{key}", training[key], 0)
    if training.get("tile_shape") is not None:
        tile = training["tile_shape"]
        if not isinstance(tile, list) or not all(_is_int(t) and t > 0 for t in tile):
            raise _fail(source, "training.tile_shape", tile, "a list of positive integers")
    config = _mapping(source, "training.config", training.get("config"))
    if config.get("optimizer") is not None and config["optimizer"] not in ("adam", "sgd"):
        raise _fail(source, "training.config.optimizer", config["optimizer"], "'adam' or 'sgd'")
    for key in ("iterations", "seed"):
        if config.get(key) is not None:
            _int(source, f"training.config.{key}", config[key], 0)
    if config.get("lr") is not None:
        _number(source, "training.config.lr", config["lr"], 0.0, math.inf, "a positive number")
    for key in ("files", "val_files"):
        if (training.get("data") or {}).get(key) is not None:
            _strings(source, f"training.data.{key}", training["data"][key])
    best = training.get("best") or {}
    if best:
        _int(source, "training.best.iteration", best.get("iteration"), 0)
        metrics = _mapping(source, "training.best.metrics", best.get("metrics"), optional=False)
        for name, v in metrics.items():
            # NaN is a possible score (a validation image without objects): kept, not refused.
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise _fail(source, f"training.best.metrics.{name}", v, "a number or null")


def _check_pretrained(source: object, value: Any) -> None:
    card = _mapping(source, "'pretrained'", value)
    for key in ("name", "description", "data", "licence", "recipe", "metrics_source"):
        _typed(source, f"pretrained.{key}", card.get(key), (str,), "a string")
    if card.get("citations") is not None:
        _strings(source, "pretrained.citations", card["citations"])
    _mapping(source, "pretrained.metrics", card.get("metrics"))
    _check_postprocessing(source, "pretrained.postprocessing", card.get("postprocessing"))


#: Top-level keys napari-unet reads, with what each must be. Other keys are kept, never read.
KNOWN_KEYS: dict[str, str] = {
    "format": "'napari-unet-model' (required)",
    "format_version": "an integer, 1 ... the version this napari-unet writes (required)",
    "architecture": "a registered architecture name (required)",
    "arguments": "its constructor arguments, a JSON object (required)",
    "package_version": "the napari-unet version that wrote the file, a string (required)",
    "created": "an ISO 8601 time, a string",
    "in_channels": "an integer equal to arguments.in_channels",
    "num_classes": "an integer equal to arguments.num_classes",
    "classes": "a list of num_classes strings",
    "normalization": "a JSON object (see napari_unet.normalize.Normalization.to_dict) or null",
    "training": "a JSON object (provenance written by napari_unet.training.train) or null",
    "pretrained": "a JSON object (a bundled model's card)",
    "postprocessing": "a JSON object of probabilities_to_labels keywords (threshold in (0, 1))",
    "object_diameter": "a positive number of pixels",
    "spacing": "a list of 2 or 3 positive numbers (pixel or voxel size per axis)",
    "inference_check": "a JSON object",
    "authors": "a list of names (strings) or objects with a name",
}


def validate_metadata(
    document: Any,
    *,
    source: object = "model",
    format_name: str = "napari-unet-model",
    format_version: int = 1,
) -> dict[str, Any]:
    """Check a model file's JSON document against the schema of :data:`KNOWN_KEYS`.

    Parameters
    ----------
    document : object
        The parsed ``napari_unet`` header value.
    source : object
        Named in error messages (the file).
    format_name, format_version : optional
        The format tag and the newest version this reader knows.

    Returns
    -------
    document : dict
        The same document, unchanged.

    Raises
    ------
    ModelFileError
        Naming the file, the key, what was found and what was expected.
    """
    _check_header(document, source, format_name, format_version)
    arguments = validate_arguments(document["architecture"], document["arguments"], source=source)
    _check_descriptive_keys(document, source, arguments)
    return document


def _check_header(document: Any, source: object, format_name: str, format_version: int) -> None:
    """The format tag and version, and the keys every model file has."""
    if not isinstance(document, dict) or document.get("format") != format_name:
        found = document.get("format") if isinstance(document, dict) else document
        raise ModelFileError(
            f"{source} is not a napari-unet model file: its format tag is {found!r}, "
            f"expected {format_name!r}"
        )
    version = document.get("format_version")
    if not _is_int(version) or not 1 <= version <= format_version:
        raise ModelFileError(
            f"{source} has format version {version!r}; this napari-unet reads versions 1 to "
            f"{format_version}"
            + (" (upgrade napari-unet to read it)" if _is_int(version) and version > 1 else "")
        )
    for key in ("architecture", "arguments", "package_version"):
        if key not in document:
            raise ModelFileError(
                f"{source} is corrupt: its metadata lacks {key!r} ({KNOWN_KEYS[key]})"
            )
    if not isinstance(document["architecture"], str):
        raise _fail(source, "'architecture'", document["architecture"], "a string")
    if not isinstance(document["package_version"], str) or not re.fullmatch(
        r"[0-9A-Za-z.+!_-]{1,64}", document["package_version"]
    ):
        raise _fail(source, "'package_version'", document["package_version"], "a version string")


def _check_descriptive_keys(
    document: dict[str, Any], source: object, arguments: Mapping[str, Any]
) -> None:
    """The optional keys: classes, normalisation, training, post-processing, size, authors."""
    for key in ("in_channels", "num_classes"):
        if document.get(key) is not None and document[key] != arguments.get(key):
            raise _fail(
                source, f"'{key}'", document[key], f"arguments.{key} ({arguments.get(key)})"
            )
    _typed(source, "'created'", document.get("created"), (str,), "an ISO 8601 string")
    classes = document.get("classes")
    if classes is not None:
        _strings(source, "'classes'", classes)
        n = arguments.get("num_classes")
        if _is_int(n) and len(classes) != n:
            raise _fail(source, "'classes'", classes, f"{n} names (num_classes)")
    _check_normalization(source, document.get("normalization"), arguments.get("in_channels"))
    _check_training(source, document.get("training"))
    if "pretrained" in document:
        _check_pretrained(source, document["pretrained"])
    _check_postprocessing(source, "'postprocessing'", document.get("postprocessing"))
    if document.get("object_diameter") is not None:
        d = document["object_diameter"]
        _number(source, "'object_diameter'", d, 1e-9, math.inf, "a positive number of pixels")
    if document.get("spacing") is not None:
        spacing = document["spacing"]
        if (
            not isinstance(spacing, list)
            or len(spacing) not in (2, 3)
            or not all(_is_number(v) and v > 0 for v in spacing)
        ):
            raise _fail(source, "'spacing'", spacing, "a list of 2 or 3 positive numbers")
    _mapping(source, "'inference_check'", document.get("inference_check"))
    authors = document.get("authors")
    if authors is not None and (
        not isinstance(authors, list)
        or not all(isinstance(a, str) or isinstance(a, Mapping) for a in authors)
    ):
        raise _fail(source, "'authors'", authors, "a list of names or objects")


# -- packages ----------------------------------------------------------------------------------


def check_member_name(name: str, *, source: object = "package") -> None:
    """Refuse a package member name that could point outside the package.

    Raises
    ------
    ModelFileError
        For absolute paths, drive letters, ``..`` parts, URLs and control characters.
    """
    parts = name.replace("\\", "/").split("/")
    if (
        not name
        or name.startswith(("/", "\\"))
        or re.match(r"^[A-Za-z]:", name)
        or ".." in parts
        or "://" in name
        or any(ord(c) < 32 for c in name)
    ):
        raise ModelFileError(
            f"{source}: refusing member {name!r}: not a relative name inside the package"
        )


def check_zip_members(
    archive: zipfile.ZipFile,
    *,
    source: object,
    max_total: int,
    max_members: int = MAX_PACKAGE_MEMBERS,
) -> None:
    """Check a package zip's directory before any member is read or extracted.

    Parameters
    ----------
    archive : zipfile.ZipFile
        Opened; only its central directory has been read.
    max_total : int
        The largest total uncompressed size accepted, in bytes.
    max_members : int, optional
        The most members accepted.

    Raises
    ------
    ModelFileError
        With the numbers, for too many members, unsafe names, a total size
        above ``max_total``, or a member that expands more than
        :data:`MAX_COMPRESSION_RATIO` times (a zip bomb).
    """
    members = archive.infolist()
    if len(members) > max_members:
        raise ModelFileError(
            f"{source} has {len(members)} members; a model package has at most "
            f"{max_members}. Nothing was read"
        )
    total = 0
    for info in members:
        check_member_name(info.filename, source=source)
        total += info.file_size
        if info.file_size > _RATIO_FLOOR and info.file_size > MAX_COMPRESSION_RATIO * max(
            info.compress_size, 1
        ):
            raise ModelFileError(
                f"{source}: member {info.filename!r} expands from {_bytes(info.compress_size)} "
                f"to {_bytes(info.file_size)} ({info.file_size / max(info.compress_size, 1):.0f}"
                " times; a model package's files never compress that well): refusing a likely "
                "zip bomb. Nothing was read"
            )
    if total > max_total:
        raise ModelFileError(
            f"{source} expands to {_bytes(total)}; the limit is {_bytes(max_total)} "
            "(see NAPARI_UNET_MAX_PARAMETERS). Nothing was read"
        )
