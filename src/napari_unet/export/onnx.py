"""Export to ONNX: the network with its softmax, dynamic batch and spatial sizes."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..normalize import Normalization
from ..outputs import replace_with, temporary_for
from ._inputs import _INSTALL_HINT, _check_out, _remove, _resolve, _synthetic_input
from ._wrapper import ExportWrapper

__all__ = ["ONNX_OPSET", "check_onnx", "export_onnx"]

ONNX_OPSET = 18


def _onnx_export(wrapper: nn.Module, example: torch.Tensor, path: Path) -> int:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"ONNX export needs onnx and onnxscript ({err}); {_INSTALL_HINT}"
        ) from err
    dims = example.ndim
    dynamic = {0: torch.export.Dim.AUTO}
    dynamic.update({axis: torch.export.Dim.AUTO for axis in range(2, dims)})
    # The exporter logs a warning per torchvision operator it cannot register; not ours.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapper,
                (example,),
                dynamo=True,
                input_names=["input"],
                output_names=["output"],
                opset_version=ONNX_OPSET,
                dynamic_shapes=(dynamic,),
                verbose=False,
            )
    finally:
        registration.setLevel(level)
    # One self-contained file: U-Nets are far below protobuf's 2 GiB limit.
    program.save(str(path), external_data=False)
    return ONNX_OPSET


def export_onnx(
    model: str | os.PathLike | tuple[nn.Module, Mapping[str, Any]],
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    check: bool = True,
    atol: float = 1e-4,
) -> Path:
    """Write the network with its softmax as an ONNX file, with dynamic batch and spatial sizes.

    Parameters
    ----------
    model : path or (nn.Module, dict)
        A napari-unet model file, or a model and its metadata.
    out : str or path-like
        The ``.onnx`` file to write.
    overwrite : bool, optional
        Replace an existing file.
    check : bool, optional
        Run the exported file with onnxruntime on a second, larger input size
        and compare with PyTorch (see :func:`check_onnx`); raise if the
        largest difference exceeds ``atol``.
    atol : float, optional
        Tolerance of that check, in probability units.

    Returns
    -------
    path : Path
        The file written.

    Raises
    ------
    ImportError
        If onnx / onnxscript (or, for ``check``, onnxruntime) is missing.
    FileExistsError
        If ``out`` exists and ``overwrite`` is False.
    ValueError
        If the check fails.

    Notes
    -----
    The ONNX graph takes the *normalised* image (input ``input``,
    (batch, channel, *spatial) float32) and returns probabilities (output
    ``output``). Normalisation is not part of it: apply the percentiles in
    the model metadata first. The exporter is ``torch.export``-based
    (``dynamo=True``), opset 18.
    """
    out = _check_out(out, overwrite)
    if out.is_dir():
        raise ValueError(f"`out` {out} is a folder, expected a file name")
    net, document = _resolve(model)
    wrapper = ExportWrapper.from_model(net)
    example = torch.from_numpy(
        Normalization.from_dict(document.get("normalization"))(
            _synthetic_input(net), channel_axis=0
        )[np.newaxis]
    )
    staging = temporary_for(out)
    try:
        _onnx_export(wrapper, example, staging)
        if check:
            diff = check_onnx(staging, (net, document))
            if not diff <= atol:
                raise ValueError(
                    f"the ONNX model differs from PyTorch by up to {diff:.3g} (> `atol` {atol})"
                )
        replace_with(staging, out)
    finally:
        _remove(staging)
    return out


def check_onnx(
    path: str | os.PathLike,
    model: str | os.PathLike | tuple[nn.Module, Mapping[str, Any]],
    *,
    shape: Sequence[int] | None = None,
    seed: int = 0,
) -> float:
    """Largest absolute difference between ONNX (onnxruntime) and PyTorch probabilities.

    Parameters
    ----------
    path : str or path-like
        An ONNX file from :func:`export_onnx`.
    model : path or (nn.Module, dict)
        The model it was exported from.
    shape : sequence of int, optional
        Spatial input shape; default: a valid shape different from the one
        used for exporting (so that dynamic sizes are exercised), batch 2.
    seed : int, optional
        Seed of the random input.

    Returns
    -------
    max_abs_diff : float
    """
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(f"checking ONNX needs onnxruntime ({err}); {_INSTALL_HINT}") from err
    net, _ = _resolve(model)
    wrapper = ExportWrapper.from_model(net)
    if shape is None:
        wanted = (40, 56) if net.spatial_dims == 2 else (12, 24, 40)
        shape = net.valid_input_shape(wanted)
    rng = np.random.default_rng(seed)
    x = rng.random((2, net.in_channels, *shape), dtype=np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["output"], {"input": x})
    with torch.no_grad():
        want = wrapper(torch.from_numpy(x)).numpy()
    if got.shape != want.shape:
        raise ValueError(f"ONNX output has shape {got.shape}, PyTorch {want.shape}")
    return float(np.abs(got - want).max())
