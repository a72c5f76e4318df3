"""Checks on a safetensors tensor table and a stored optimiser state, from the header alone.

:func:`check_tensor_table` checks names, dtypes, shapes and byte ranges of a
safetensors header (contiguous, exactly filling the file);
:func:`expected_tensors` and :func:`check_weights_table` compare the table with
the tensors the declared architecture has (built on PyTorch's ``meta`` device,
which allocates nothing); :func:`check_optimizer_state` checks a stored
optimiser state against the model's parameters. Failures are
:class:`~napari_unet.modelcheck.ModelFileError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .modelcheck import ModelFileError, _fail, _is_int

__all__ = [
    "check_optimizer_state",
    "check_tensor_table",
    "check_weights_table",
    "expected_tensors",
    "optimizer_kind",
]

_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_INT_DTYPES = {"U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64"}


def check_tensor_table(
    header: Any, *, data_size: int, source: object = "model"
) -> dict[str, tuple[str, tuple[int, ...], tuple[int, int]]]:
    """Check a safetensors header's tensor table against the bytes that follow it.

    Parameters
    ----------
    header : object
        The parsed JSON header (tensor name -> ``dtype``, ``shape``,
        ``data_offsets``; plus ``__metadata__``).
    data_size : int
        Bytes after the header in the file.

    Returns
    -------
    table : dict
        Name -> (dtype, shape, (begin, end)).

    Raises
    ------
    ModelFileError
        If an entry is malformed, its byte range does not match its dtype and
        shape, or the ranges are not contiguous and exactly fill the file
        (then it was cut short or padded).
    """
    if not isinstance(header, dict):
        raise _fail(source, "the safetensors header", type(header).__name__, "a JSON object")
    meta = header.get("__metadata__")
    if meta is not None and (
        not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values())
    ):
        raise _fail(source, "__metadata__", meta, "a JSON object of strings")
    table = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        where = f"tensor {name!r}"
        if not isinstance(entry, dict):
            raise _fail(source, where, entry, "an object with dtype, shape and data_offsets")
        for key in ("dtype", "shape", "data_offsets"):
            if key not in entry:
                raise ModelFileError(f"{source} is corrupt: {where} has no {key!r}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in _DTYPE_BYTES:
            raise _fail(source, f"{where} dtype", dtype, f"one of {', '.join(_DTYPE_BYTES)}")
        if not isinstance(shape, list) or not all(_is_int(n) and n >= 0 for n in shape):
            raise _fail(source, f"{where} shape", shape, "a list of non-negative integers")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(n) for n in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise _fail(
                source, f"{where} data_offsets", offsets, "[begin, end], 0 <= begin <= end"
            )
        nbytes = math.prod(shape) * _DTYPE_BYTES[dtype]
        if offsets[1] - offsets[0] != nbytes:
            raise _fail(
                source,
                f"{where} data_offsets",
                offsets,
                f"a range of {nbytes} bytes ({dtype} {tuple(shape)})",
            )
        table[name] = (dtype, tuple(shape), (offsets[0], offsets[1]))
    position = 0
    for name, (_, _, (begin, end)) in sorted(table.items(), key=lambda item: item[1][2]):
        if begin != position:
            raise ModelFileError(
                f"{source} is corrupt: tensor {name!r} starts at byte {begin} of the data, "
                f"expected {position} (tensors must be contiguous)"
            )
        position = end
    if position != data_size:
        what = "truncated" if position > data_size else "corrupt"
        raise ModelFileError(
            f"{source} is {what}: its tensors need {position} bytes after the header, the file "
            f"has {data_size}"
            + (" (an interrupted copy or download?)" if what == "truncated" else "")
        )
    return table


class _SkipInit(TorchFunctionMode):
    """Weight initialisation as a no-op: on the meta device there is nothing to fill.

    Without it, the first ``normal_`` on a meta tensor costs seconds (PyTorch
    decomposes it through its reference implementations).
    """

    _INIT = frozenset(
        {getattr(nn.init, n) for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")}
        | {torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.fill_, torch.Tensor.zero_}
    )

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._INIT:
            return args[0] if args else kwargs.get("tensor")
        return func(*args, **kwargs)


def expected_tensors(cls: type[nn.Module], arguments: Mapping[str, Any]) -> nn.Module:
    """The architecture built on PyTorch's ``meta`` device: shapes only, no memory.

    Only call this after :func:`~napari_unet.modelcheck.check_budget`:
    construction time still grows with the number of layers.
    """
    with torch.device("meta"), _SkipInit():
        return cls(**dict(arguments))


def check_weights_table(
    table: Mapping[str, tuple[str, tuple[int, ...], tuple[int, int]]],
    meta_model: nn.Module,
    *,
    source: object = "model",
    description: str = "",
    ignore_prefix: str = "__optimizer__.",
) -> None:
    """Check the file's tensor names, shapes and dtypes against the architecture's.

    Raises
    ------
    ModelFileError
        Listing missing, unexpected and wrongly shaped tensors.
    """
    expected = meta_model.state_dict()
    weights = {k: v for k, v in table.items() if not k.startswith(ignore_prefix)}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = []
    for name, tensor in expected.items():
        if name not in weights:
            continue
        dtype, shape = weights[name][:2]
        family = _FLOAT_DTYPES if tensor.dtype.is_floating_point else _INT_DTYPES
        if shape != tuple(tensor.shape) or dtype not in family:
            wrong.append(f"{name} {dtype} {shape} vs {tuple(tensor.shape)}")
    if missing or unexpected or wrong:
        details = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing[:3])}" if missing else "",
                f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
                f"wrong shape or dtype {', '.join(wrong[:3])}" if wrong else "",
            )
            if part
        )
        raise ModelFileError(
            f"{source}: the weights do not match the stored architecture {description}: "
            f"{details} ({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} "
            "wrong; nothing was loaded)"
        )


def optimizer_kind(state: Mapping[str, Any]) -> str:
    """``"adam"`` or ``"sgd"``: which optimiser a stored ``state_dict()`` belongs to."""
    groups = state.get("param_groups") or [{}]
    return "adam" if "betas" in groups[0] else "sgd"


_STATE_KEYS = {
    "adam": {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    "sgd": {"momentum_buffer"},
}
_GROUP_KEYS = {"adam": {"lr", "betas", "eps", "weight_decay"}, "sgd": {"lr", "momentum"}}


def check_optimizer_state(
    groups: Any,
    state: Mapping[int, Mapping[str, torch.Tensor]],
    parameter_shapes: Sequence[tuple[int, ...]],
    *,
    source: object = "model",
) -> None:
    """Check a stored optimiser state against the model's parameters.

    Parameters
    ----------
    groups : object
        The stored ``param_groups`` (a list of objects with ``params``).
    state : mapping
        Parameter index -> {name: tensor}.
    parameter_shapes : sequence of tuple
        Shapes of ``model.parameters()``, in order.

    Raises
    ------
    ModelFileError
        If the groups do not cover exactly the model's parameters, the state
        is neither Adam's nor SGD's, or a tensor has the wrong shape.
    """
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        raise _fail(source, "the optimiser's param_groups", groups, "a non-empty list of objects")
    kind = "adam" if "betas" in groups[0] else "sgd"
    indices: list[int] = []
    for i, group in enumerate(groups):
        missing = sorted(_GROUP_KEYS[kind] - set(group))
        params = group.get("params")
        if missing or not isinstance(params, list) or not all(_is_int(p) for p in params):
            raise _fail(
                source,
                f"the optimiser's param_groups[{i}]",
                sorted(group),
                f"the keys of a {kind} group ({', '.join(sorted(_GROUP_KEYS[kind]))}, params)",
            )
        indices += params
    n = len(parameter_shapes)
    if sorted(indices) != list(range(n)):
        raise ModelFileError(
            f"{source}: the optimiser state covers {len(indices)} parameter(s), the model has "
            f"{n}; it was saved for a different model (fine-tune instead of resuming)"
        )
    for index, tensors in state.items():
        if not 0 <= index < n:
            raise _fail(source, "an optimiser state index", index, f"in [0, {n})")
        unknown = sorted(set(tensors) - _STATE_KEYS[kind])
        if unknown:
            raise _fail(
                source, f"the optimiser state of parameter {index}", unknown, f"{kind} state keys"
            )
        for name, tensor in tensors.items():
            if tensor.ndim and tuple(tensor.shape) != tuple(parameter_shapes[index]):
                raise ModelFileError(
                    f"{source}: optimiser state {name} of parameter {index} has shape "
                    f"{tuple(tensor.shape)}, the parameter {tuple(parameter_shapes[index])} "
                    "(saved for a different model; fine-tune instead of resuming)"
                )
