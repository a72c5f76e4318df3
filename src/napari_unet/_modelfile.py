"""Model files: weights in safetensors, metadata as JSON in the same file.

A napari-unet model file is one ``.safetensors`` file. Its tensors are the
model's ``state_dict`` (and, for training checkpoints, the optimiser state
under the ``__optimizer__.`` prefix); its string header holds one key,
``napari_unet``, whose value is a JSON document describing the architecture
and its arguments, the classes, the input normalisation and the training
provenance (see :func:`save_model`). One file is easy to move, and the
safetensors format stores only numbers: loading never runs code from the file.

Pickle-based PyTorch files (``torch.save``, ``.pt`` / ``.pth``) are refused,
because unpickling can execute arbitrary code.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import load_file as _st_load_file
from safetensors.torch import save as _st_save
from torch import nn

from . import __version__
from .devices import select_device
from .modelcheck import (
    MAX_HEADER_BYTES,
    ModelFileError,
    check_budget,
    validate_arguments,
    validate_metadata,
)
from .models.registry import ARCHITECTURES, architecture_name, build_model, register_architecture
from .tensortable import (
    check_optimizer_state,
    check_tensor_table,
    check_weights_table,
    expected_tensors,
)

__all__ = [
    "ARCHITECTURES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ModelFileError",
    "architecture_name",
    "build_model",
    "load_checkpoint",
    "load_model",
    "read_metadata",
    "register_architecture",
    "save_model",
]

FORMAT_NAME = "napari-unet-model"
FORMAT_VERSION = 1
_HEADER_KEY = "napari_unet"
_OPTIMIZER_PREFIX = "__optimizer__."


def save_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    optimizer_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model and its metadata to one safetensors file, atomically.

    Parameters
    ----------
    model : nn.Module
        A registered architecture (``UNet``, ...); its weights are copied to the CPU.
    path : str or path-like
        The file to write (``.safetensors`` is conventional but not required).
    metadata : mapping, optional
        JSON-serialisable extra information, merged into the stored document.
        Conventional keys: ``classes`` (list of names), ``normalization``
        (see :mod:`napari_unet.normalize`), ``training`` (config, data,
        iterations, metrics). Keys that the file format owns
        (``format``, ``format_version``, ``architecture``, ``arguments``,
        ``package_version``) are set here and may not be given.
    overwrite : bool, optional
        Replace an existing file. By default an existing file is an error, so
        user-facing code never overwrites silently.
    optimizer_state : mapping, optional
        An optimiser ``state_dict()`` to store as well (training checkpoints).

    Returns
    -------
    path : Path
        The file written.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    ValueError
        If the metadata is not JSON-serialisable or uses a reserved key.

    Notes
    -----
    The file is written to a temporary file in the same folder, flushed to
    disk (``fsync``) and renamed over ``path`` with :func:`os.replace`, which
    is atomic: after a crash, a cancel or Ctrl-C, ``path`` holds either the
    previous file or the new one, never a half-written one.

    The stored JSON document (header key ``napari_unet``) has the keys
    ``format`` (``"napari-unet-model"``), ``format_version`` (1),
    ``architecture`` (registry name), ``arguments`` (constructor arguments),
    ``in_channels``, ``num_classes``, ``created`` (ISO 8601, UTC),
    ``package_version``, plus everything in ``metadata``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if path.is_dir():
        raise ValueError(f"`path` {path} is a folder, expected a file name")
    document = _document(model, metadata)
    header = {_HEADER_KEY: json.dumps(document, sort_keys=True)}
    if optimizer_state is not None:
        tensors, groups = _flatten_optimizer(optimizer_state)
        header["optimizer"] = json.dumps(groups)
    else:
        tensors = {}
    for key, value in model.state_dict().items():
        # safetensors refuses shared or non-contiguous storage: store plain copies.
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    data = _st_save(tensors, metadata=header)
    _atomic_write(path, data)
    return path


def _document(model: nn.Module, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    arguments = model.config()
    document: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "architecture": architecture_name(model),
        "arguments": arguments,
        "in_channels": arguments.get("in_channels"),
        "num_classes": arguments.get("num_classes"),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "package_version": __version__,
    }
    reserved = {"format", "format_version", "architecture", "arguments", "package_version"}
    for key, value in (metadata or {}).items():
        if key in reserved:
            raise ValueError(f"`metadata` key {key!r} is reserved: it is set from the model")
        document[key] = value
    try:
        json.dumps(document)
    except (TypeError, ValueError) as err:
        raise ValueError(f"`metadata` must be JSON-serialisable: {err}") from err
    # Never write a file that load_model would refuse.
    try:
        validate_metadata(document, format_name=FORMAT_NAME, format_version=FORMAT_VERSION)
    except ModelFileError as err:
        raise ValueError(f"`metadata` does not fit the model-file schema: {err}") from err
    return document


def _umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def _atomic_write(path: Path, data: bytes) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    # mkstemp creates the file 0600; a model file gets the mode any new file would get
    # (0666 & ~umask), or keeps the mode of the file it replaces.
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        else:  # Windows before Python 3.13: only the read-only bit exists
            os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Also on KeyboardInterrupt: never leave the temporary file behind.
        Path(tmp).unlink(missing_ok=True)
        raise
    # Make the rename itself durable; not possible on every platform (Windows).
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _flatten_optimizer(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], list]:
    tensors: dict[str, torch.Tensor] = {}
    for index, per_param in state["state"].items():
        for key, value in per_param.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{_OPTIMIZER_PREFIX}{index}.{key}"] = tensor.detach().cpu().contiguous()
    return tensors, list(state["param_groups"])


# -- reading -----------------------------------------------------------------------------------

_PICKLE_HINT = (
    "it looks like a pickle-based PyTorch file (torch.save / .pt / .pth). napari-unet refuses "
    "to load those because unpickling can run arbitrary code from the file. Load it yourself "
    "only if you trust its source, then save it with napari_unet.io.save_model()"
)


class _Header:
    """What the header of a safetensors file says, read without its tensor data."""

    def __init__(self, metadata: dict[str, str], table: dict, data_start: int) -> None:
        self.metadata = metadata
        self.table = table
        self.data_start = data_start


def _parse_header(source: object, head: bytes, file_size: int, rest: Any) -> _Header:
    """Check the safetensors structure from its first bytes; ``rest(n)`` reads n more."""
    # Recognise safetensors by its own structure (a little-endian header length, then a JSON
    # object), never by a magic byte: the first byte is the low byte of that length and can be
    # 0x80 ("P" and "K" too) in a perfectly valid file.
    size = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else None
    looks_safetensors = size is not None and head[8:9] == b"{"
    if not looks_safetensors and (head[:2] == b"PK" or head[:1] == b"\x80"):
        # Zip archive (torch.save since 1.6) or a raw pickle stream (protocol 2+).
        raise ModelFileError(f"{source} is not a napari-unet model file: {_PICKLE_HINT}")
    if size is None:
        raise ModelFileError(f"{source} is not a model file: too short ({file_size} bytes)")
    if not looks_safetensors:
        raise ModelFileError(
            f"{source} is not a napari-unet model file (no safetensors header); "
            "expected a .safetensors file written by napari-unet"
        )
    if size > MAX_HEADER_BYTES:
        raise ModelFileError(
            f"{source}: its header claims {size} bytes; napari-unet reads headers of at most "
            f"{MAX_HEADER_BYTES} bytes (a model's is a few KB): corrupt or not a model file"
        )
    if 8 + size > file_size:
        raise ModelFileError(
            f"{source} is truncated: its header needs {8 + size} bytes, the file has {file_size}"
        )
    raw = head[8:] + rest(size - len(head[8:]))
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise ModelFileError(f"{source} is corrupt: its header is not valid JSON ({err})") from err
    if not isinstance(header, dict):
        raise ModelFileError(f"{source} is corrupt: its header is not a JSON object")
    table = check_tensor_table(header, data_size=file_size - 8 - size, source=source)
    return _Header(header.get("__metadata__") or {}, table, 8 + size)


def _read_header(path: Path) -> _Header:
    """Check a file is a complete safetensors file from its header alone (no tensor data)."""
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file")
    if not path.is_file():
        raise ModelFileError(f"{path} is not a regular file (a device or pipe?), not a model file")
    with open(path, "rb") as fh:
        file_size = os.fstat(fh.fileno()).st_size
        return _parse_header(path, fh.read(9), file_size, fh.read)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a model file, without building the model or reading its weights.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ModelFileError
        If it is not a napari-unet model file or its metadata breaks the
        schema (:func:`napari_unet.modelcheck.validate_metadata`).
    """
    # bioimage.io packages: napari_unet.io.read_metadata (this module does not know them).
    path = Path(path)
    return _parse_document(path, _read_header(path).metadata)


def _parse_document(path: object, header: Mapping[str, str]) -> dict[str, Any]:
    if _HEADER_KEY not in header:
        raise ModelFileError(
            f"{path} is a safetensors file but not a napari-unet model: it has no "
            f"{_HEADER_KEY!r} metadata (architecture, classes, normalisation)"
        )
    try:
        document = json.loads(header[_HEADER_KEY])
    except (ValueError, TypeError, RecursionError) as err:
        raise ModelFileError(f"{path} is corrupt: its metadata is not valid JSON ({err})") from err
    try:
        return validate_metadata(
            document, source=path, format_name=FORMAT_NAME, format_version=FORMAT_VERSION
        )
    except RecursionError as err:
        raise ModelFileError(f"{path} is corrupt: its metadata is nested too deeply") from err


def _check_device(device: str | torch.device | None) -> torch.device | None:
    """Resolve ``device`` before any reading: a clear ValueError if it does not exist here."""
    return None if device is None else select_device(device)


def _check_before_loading(path: object, header: _Header) -> tuple[dict[str, Any], nn.Module]:
    """The document, and the architecture on the meta device, once everything else is checked."""
    document = _parse_document(path, header.metadata)
    architecture = document["architecture"]
    if architecture not in ARCHITECTURES:
        raise ModelFileError(
            f"{path}: unknown architecture {architecture!r}; this version of napari-unet knows "
            f"{', '.join(sorted(ARCHITECTURES))} (a newer version may be needed)"
        )
    arguments = validate_arguments(architecture, document["arguments"], source=path)
    check_budget(architecture, arguments, source=path)
    try:
        shapes = expected_tensors(ARCHITECTURES[architecture], arguments)
    except (TypeError, ValueError) as err:
        raise ModelFileError(
            f"{path}: the arguments stored for architecture {architecture!r} are invalid: {err}"
        ) from err
    check_weights_table(
        header.table, shapes, source=path, description=f"{architecture!r} {document['arguments']}"
    )
    return document, shapes


def _load_checked(
    path: object,
    header: _Header,
    read: Any,
    device: torch.device | None,
    with_optimizer: bool = True,
) -> tuple[nn.Module, dict[str, Any], dict[str, Any] | None]:
    """Check everything from the header, then ``read()`` the tensors and build the model."""
    document, shapes = _check_before_loading(path, header)
    optimizer_groups = None
    if "optimizer" in header.metadata:
        try:
            optimizer_groups = json.loads(header.metadata["optimizer"])
        except (ValueError, TypeError, RecursionError) as err:
            raise ModelFileError(f"{path} is corrupt: bad optimiser state ({err})") from err
    for key in header.table:
        if key.startswith(_OPTIMIZER_PREFIX):
            index, _, name = key[len(_OPTIMIZER_PREFIX) :].partition(".")
            if not index.isdigit() or not name or optimizer_groups is None:
                raise ModelFileError(
                    f"{path} is corrupt: invalid optimiser tensor name {key!r}; expected "
                    f"{_OPTIMIZER_PREFIX}<parameter index>.<name> with an 'optimizer' header"
                )
    try:
        tensors = read()
    except SafetensorError as err:
        raise ModelFileError(f"{path} is corrupt: {err}") from err
    if set(tensors) != set(header.table) or any(
        tuple(v.shape) != header.table[k][1] for k, v in tensors.items()
    ):
        raise ModelFileError(f"{path} changed while it was being read; try again")
    model = build_model(document["architecture"], document["arguments"])
    weights = {k: v for k, v in tensors.items() if not k.startswith(_OPTIMIZER_PREFIX)}
    model.load_state_dict(weights, strict=True)
    del weights
    model.eval()
    if device is not None:
        model.to(device)
    if optimizer_groups is None or not with_optimizer:
        return model, document, None
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(_OPTIMIZER_PREFIX):
            index, name = key[len(_OPTIMIZER_PREFIX) :].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    check_optimizer_state(
        optimizer_groups, state, [tuple(p.shape) for p in shapes.parameters()], source=path
    )
    # Tensors come back in name order ("10" before "2"): restore the index order.
    return (
        model,
        document,
        {"state": dict(sorted(state.items())), "param_groups": optimizer_groups},
    )


def load_checkpoint(
    path: str | os.PathLike, *, device: str | torch.device | None = "cpu"
) -> tuple[nn.Module, dict[str, Any], dict[str, Any] | None]:
    """Load a model file together with its optimiser state, if it has one.

    Everything is checked from the file's header before the weights are read
    or the network is built: the metadata schema, the parameter budget, and
    the tensor table against the declared architecture (see
    :mod:`napari_unet.modelcheck`).

    Returns
    -------
    model : nn.Module
        In eval mode, on ``device``.
    metadata : dict
        The stored JSON document.
    optimizer_state : dict or None
        An optimiser ``state_dict()`` (tensors on the CPU), checked against
        the model's parameters, or None.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ModelFileError
        As for :func:`load_model`; also if the optimiser state does not fit the model.
    ValueError
        If ``device`` does not exist on this machine (e.g. ``"cuda"`` without a GPU).

    See Also
    --------
    load_model
    """
    path = Path(path)
    target = _check_device(device)
    header = _read_header(path)
    return _load_checked(path, header, lambda: _st_load_file(path), target)


def load_model_bytes(
    data: bytes, *, source: object, device: str | torch.device | None = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`load_model` for a model file already in memory (a package member)."""
    target = _check_device(device)
    position = [9]

    def rest(n: int) -> bytes:
        start = position[0]
        position[0] += n
        return data[start : start + n]

    header = _parse_header(source, data[:9], len(data), rest)
    model, document, _ = _load_checked(source, header, lambda: _st_load(data), target)
    return model, document


def load_model(
    path: str | os.PathLike, *, device: str | torch.device | None = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model file written by :func:`save_model`.

    Parameters
    ----------
    path : str or path-like
        A napari-unet ``.safetensors`` model file (bioimage.io packages:
        :func:`napari_unet.io.load_model`).
    device : str or torch.device, optional
        Where to put the model; None leaves it on the CPU.

    Returns
    -------
    model : nn.Module
        The rebuilt architecture with the stored weights, in eval mode.
    metadata : dict
        The stored JSON document (architecture, arguments, classes,
        normalisation, training provenance, ...).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ModelFileError
        (a ``ValueError``) if the file is pickle-based (refused: unpickling
        can run code), not a napari-unet file, truncated, corrupt, of an
        unknown architecture, or its weights do not fit the architecture.

    Notes
    -----
    Only the safetensors format is read; ``torch.load`` is never called, so
    nothing in the file is executed.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from napari_unet.models import UNet
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.safetensors"
    >>> _ = save_model(UNet(depth=1, base_channels=2), path, metadata={"classes": ["bg", "fg"]})
    >>> model, meta = load_model(path)
    >>> meta["architecture"], meta["classes"]
    ('unet', ['bg', 'fg'])
    """
    # bioimage.io packages: napari_unet.io.load_model (this module does not know them).
    # The optimiser state, if any, is not needed (nor checked) to predict.
    path = Path(path)
    target = _check_device(device)
    model, document, _ = _load_checked(
        path, _read_header(path), lambda: _st_load_file(path), target, with_optimizer=False
    )
    return model, document
