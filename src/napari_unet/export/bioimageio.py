"""Write bioimage.io model packages.

A bioimage.io model package [1]_ is a zip file (or a folder) with an
``rdf.yaml`` description, the weights and test tensors; deepImageJ, ilastik,
QuPath, micro-sam and ``bioimageio.core`` run such packages. What
:func:`export_bioimageio` writes:

``rdf.yaml``
    Model description, format 0.5 (:data:`RDF_FORMAT_VERSION`), written
    directly as YAML so that exporting does not depend on one
    ``bioimageio.spec`` version; ``bioimageio.spec`` validates the result.
``weights.pt`` / ``weights_torchscript.pt`` / ``weights.onnx``
    The weights as a PyTorch state dict (the architecture comes from
    ``napari_unet.export.ExportWrapper``, so ``napari-unet`` must be
    installed to use them), as TorchScript (self-contained: no Python code
    needed) and, on request, as ONNX. All produce softmax probabilities.
``model.safetensors``
    The napari-unet model file itself (an attachment), so that
    :func:`napari_unet.io.load_model` reads the package back losslessly and
    without unpickling anything.
``test_input.npy`` / ``test_output.npy``
    A sample input (the user's image or a synthetic smooth image) and the
    model's output on it.
``sample_input.tif`` / ``sample_output.tif``
    The same as TIFF, for people (2D models only).
``cover.png``, ``README.md``, ``environment.yaml``
    Cover image (input | prediction), documentation, and the Python
    environment needed for the state-dict weights.

The full napari-unet metadata (architecture, arguments, classes,
normalisation, training provenance) is stored in ``config: napari_unet:`` of
``rdf.yaml``.

References
----------
.. [1] W. Ouyang et al., "BioImage Model Zoo: A Community-Driven Resource for
       Accessible Deep Learning in BioImage Analysis", bioRxiv 2022.
       :DOI:`10.1101/2022.06.07.495102`
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import string
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from .._modelfile import save_model
from ..normalize import Normalization
from ..outputs import replace_with, temporary_for
from ._docs import _write_docs
from ._inputs import (
    _INSTALL_HINT,
    _SPATIAL_AXES,
    _check_out,
    _remove,
    _resolve,
    _sample_input,
    _size_rule,
    _synthetic_input,
)
from ._reader import _MODEL_FILE, CONFIG_KEY
from ._wrapper import ExportWrapper
from .onnx import _onnx_export

__all__ = ["RDF_FORMAT_VERSION", "export_bioimageio"]

#: The bioimage.io model description format written. Every field used exists in format 0.5;
#: an early 0.5 patch level keeps readers that bundle an older bioimageio.spec working,
#: and newer bioimageio.spec versions upgrade it on load (0.5.12 validates it as 0.5.12).
RDF_FORMAT_VERSION = "0.5.4"
_CITE_UNET = {
    "text": "Ronneberger, Fischer and Brox: U-Net: Convolutional Networks for Biomedical "
    "Image Segmentation, MICCAI 2015",
    "doi": "10.1007/978-3-319-24574-4_28",
}
_CITE_UNETPP = {
    "text": "Zhou, Rahman Siddiquee, Tajbakhsh and Liang: UNet++: A Nested U-Net "
    "Architecture for Medical Image Segmentation, DLMIA 2018",
    "doi": "10.1007/978-3-030-00889-5_1",
}


# -- test tensors ------------------------------------------------------------------------------


def _predict(
    wrapper: ExportWrapper, normalization: Normalization, image: np.ndarray
) -> np.ndarray:
    """Probabilities for one (C, *spatial) image: (1, classes, *output spatial)."""
    normalized = normalization(image, channel_axis=0)
    with torch.no_grad():
        return wrapper(torch.from_numpy(normalized[np.newaxis])).numpy()


# -- bioimage.io export ------------------------------------------------------------------------


def export_bioimageio(
    model: str | os.PathLike | tuple[nn.Module, Mapping[str, Any]],
    out: str | os.PathLike,
    *,
    name: str | None = None,
    description: str | None = None,
    authors: Sequence[str | Mapping[str, str]] | None = None,
    license: str = "CC-BY-4.0",
    sample: np.ndarray | None = None,
    weights: Sequence[str] = ("pytorch_state_dict", "torchscript"),
    tags: Sequence[str] = (),
    overwrite: bool = False,
    validate: bool = True,
    test: bool = False,
) -> Path:
    """Write a bioimage.io model package (zip or folder).

    Parameters
    ----------
    model : path or (nn.Module, dict)
        A napari-unet model file, or a model and its metadata (as returned by
        :func:`napari_unet.io.load_model`, or a plain dict with ``classes``,
        ``normalization``, ...).
    out : str or path-like
        A name ending in ``.zip`` (conventionally ``.bioimageio.zip``) writes
        a zip package; anything else a folder.
    name : str, optional
        Display name; default: the file name of ``out`` without suffixes.
    description : str, optional
        One-line description; default: architecture and classes.
    authors : sequence of str or dict, optional
        Names, or dicts with ``name`` and optionally ``affiliation``,
        ``email``, ``orcid``, ``github_user``. Default: ``metadata["authors"]``,
        else "unknown".
    license : str, optional
        SPDX identifier of the weights' licence (``"CC-BY-4.0"``, ``"MIT"``, ...).
    sample : ndarray, optional
        A typical raw input image, (Y, X) / (C, Y, X) (2D models) or
        (Z, Y, X) / (C, Z, Y, X) (3D); it is centre-cropped to a valid size
        (at most 256 x 256, or 32 x 128 x 128) and becomes the test input and
        the cover. Default: a seeded synthetic smooth image.
    weights : sequence of str, optional
        Weight formats, from ``"pytorch_state_dict"``, ``"torchscript"``,
        ``"onnx"``; the state dict is always written.
    tags : sequence of str, optional
        Extra tags (``"nuclei"``, ``"fluorescence"``, ...).
    overwrite : bool, optional
        Replace an existing package. A non-empty folder that is not a
        bioimage.io package is never replaced.
    test : bool, optional
        Also run ``bioimageio.core``'s model test (inference on the test
        tensors with every weight format) and raise if it fails.

    Returns
    -------
    path : Path
        The package written (``out``).

    Raises
    ------
    ImportError
        If ``bioimageio.spec`` (and, for ``test``, ``bioimageio.core``) is
        not installed.
    FileExistsError
        If ``out`` exists and ``overwrite`` is False.
    ValueError
        For an unsupported weight format, a sample of the wrong shape, or a
        package that fails validation.

    Notes
    -----
    *Axes and sizes.* The input is (batch, channel, y, x), or
    (batch, channel, z, y, x) for 3D models, with every spatial axis of size
    ``min + k * step``: ``step = 2**depth`` and ``min`` the smallest valid
    size (for the valid-padding U-Net ``min`` follows from the halo, e.g.
    ``44 + 4k`` at depth 2). The output's spatial axes refer to the input's
    with ``offset = -2 * halo``: the valid U-Net's output is smaller by the
    halo on each side (0 for "same" padding).

    *Processing.* The stored normalisation becomes pre-processing:
    ``scope="image"`` is ``scale_range`` over the axes (y, x), so per sample,
    per channel and (3D) per plane, with the stored percentiles, exactly as
    napari-unet normalises; ``scope="dataset"`` is ``scale_linear`` along the
    channel axis with the fitted values. The softmax is part of the network,
    so no post-processing beyond the implicit float32 cast is declared.

    *Weights.* The state dict's architecture is ``ExportWrapper`` imported
    from ``napari_unet.export`` with the architecture name and arguments as
    keyword arguments, which validates offline and needs no source file in
    the package; TorchScript (traced) and ONNX need no napari-unet at all.
    """
    unknown = set(weights) - {"pytorch_state_dict", "torchscript", "onnx"}
    if unknown:
        raise ValueError(
            f"`weights` may contain 'pytorch_state_dict', 'torchscript', 'onnx'; "
            f"got {sorted(unknown)}"
        )
    if validate or test:
        _require_spec()
    out = _check_out(out, overwrite)
    net, document = _resolve(model)
    if net.spatial_dims not in _SPATIAL_AXES:
        raise ValueError(f"cannot export a model with {net.spatial_dims} spatial dimensions")
    wrapper = ExportWrapper.from_model(net)
    normalization = Normalization.from_dict(document.get("normalization"))
    preprocessing = _preprocessing(normalization)
    image = _synthetic_input(net) if sample is None else _sample_input(net, sample)
    probs = _predict(wrapper, normalization, image)
    classes = [str(c) for c in document.get("classes") or []]
    if len(classes) != net.num_classes:
        classes = [f"class{i}" for i in range(net.num_classes)]
    arch_title = "U-Net++" if document["architecture"] == "unetplusplus" else "U-Net"
    name = _model_name(name, out, arch_title)

    # Written under temporary names beside `out` and moved into place only when
    # complete and checked (outputs.replace_with); orphans of a crash are named
    # for outputs.remove_orphans.
    is_zip = out.suffix.lower() == ".zip"
    staging = temporary_for(out, folder=not is_zip)
    folder = temporary_for(out.with_name(out.stem), folder=True) if is_zip else staging
    try:
        folder.mkdir(exist_ok=True)
        # Sample tensors are for people (and FAIR checks); imageio reads TIFF pages
        # one at a time, so only 2D models get them.
        samples = net.spatial_dims == 2
        _write_test_tensors(folder, image, probs, samples=samples)
        _write_docs(folder, document, net, name, image, probs)
        example = torch.from_numpy(normalization(image, channel_axis=0)[np.newaxis])
        weight_entries = _write_weights(folder, net, wrapper, document, example, weights)
        rdf = _rdf(
            folder,
            net,
            document,
            name=name,
            description=description,
            authors=authors,
            license=license,
            tags=tags,
            classes=classes,
            arch_title=arch_title,
            preprocessing=preprocessing,
            weight_entries=weight_entries,
            samples=samples,
        )
        (folder / "rdf.yaml").write_text(_dump_yaml(rdf), encoding="utf-8")
        _publish(folder, staging, out, is_zip=is_zip, validate=validate, test=test)
    finally:
        _remove(staging)
        _remove(folder)
    return out


def _write_test_tensors(
    folder: Path, image: np.ndarray, probs: np.ndarray, *, samples: bool
) -> None:
    """The test tensors (.npy) and, if ``samples``, the same as TIFF sample tensors."""
    np.save(folder / "test_input.npy", image[np.newaxis])
    np.save(folder / "test_output.npy", probs)
    if samples:
        import tifffile

        tifffile.imwrite(folder / "sample_input.tif", image, photometric="minisblack")
        tifffile.imwrite(folder / "sample_output.tif", probs[0], photometric="minisblack")


def _entry(folder: Path, source: str, **fields: Any) -> dict[str, Any]:
    """An rdf.yaml file entry: the file's name in the package, its sha256 and ``fields``."""
    return {"source": source, "sha256": _sha256(folder / source), **fields}


def _write_weights(
    folder: Path,
    model: nn.Module,
    wrapper: ExportWrapper,
    document: Mapping[str, Any],
    example: torch.Tensor,
    weights: Sequence[str],
) -> dict[str, Any]:
    """The model file, the state dict with its environment and the other requested formats.

    Returns the rdf.yaml ``weights`` entries.
    """
    torch_version = torch.__version__.split("+")[0]
    save_model(model, folder / _MODEL_FILE, metadata=_user_keys(document))
    # Plain tensors only: readable with torch.load(weights_only=True).
    state = {k: v.detach().clone() for k, v in wrapper.state_dict().items()}
    torch.save(state, folder / "weights.pt")
    (folder / "environment.yaml").write_text(
        "name: napari-unet\nchannels:\n  - conda-forge\n  - nodefaults\ndependencies:\n"
        f"  - python>=3.10\n  - pytorch>={torch_version}\n  - pip\n  - pip:\n"
        f"    - napari-unet-cells>={__version__}\n",
        encoding="utf-8",
    )
    entries: dict[str, Any] = {
        "pytorch_state_dict": _entry(
            folder,
            "weights.pt",
            architecture={
                "callable": "ExportWrapper",
                "import_from": "napari_unet.export",
                "kwargs": {
                    "architecture": document["architecture"],
                    "arguments": document["arguments"],
                },
            },
            pytorch_version=torch_version,
            dependencies=_entry(folder, "environment.yaml"),
            comment="napari_unet.export.ExportWrapper: the network and a softmax",
        )
    }
    if "torchscript" in weights:
        _trace(wrapper, example).save(str(folder / "weights_torchscript.pt"))
        entries["torchscript"] = _entry(
            folder,
            "weights_torchscript.pt",
            pytorch_version=torch_version,
            parent="pytorch_state_dict",
            comment="traced with torch.jit.trace; includes the softmax",
        )
    if "onnx" in weights:
        opset = _onnx_export(wrapper, example, folder / "weights.onnx")
        entries["onnx"] = _entry(
            folder,
            "weights.onnx",
            opset_version=opset,
            parent="pytorch_state_dict",
            comment="torch.onnx.export (dynamo); includes the softmax",
        )
    return entries


def _axes(
    model: nn.Module, classes: Sequence[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rdf.yaml axes of the input and the output tensor."""
    spatial = _SPATIAL_AXES[model.spatial_dims]
    rules = [_size_rule(model, i) for i in range(len(spatial))]  # (min, step, halo) per axis
    channel_names = [f"channel{i}" for i in range(model.in_channels)]
    input_axes: list[dict[str, Any]] = [
        {"type": "batch"},
        {"type": "channel", "channel_names": channel_names},
    ] + [
        {"type": "space", "id": axis, "size": {"min": minimum, "step": step}}
        for axis, (minimum, step, _) in zip(spatial, rules, strict=True)
    ]
    output_axes: list[dict[str, Any]] = [
        {"type": "batch"},
        {"type": "channel", "channel_names": list(classes)},
    ] + [
        {
            "type": "space",
            "id": axis,
            # The valid U-Net's output is the input less the halo on each side.
            "size": {"tensor_id": "input", "axis_id": axis, "offset": -2 * halo},
        }
        for axis, (_, _, halo) in zip(spatial, rules, strict=True)
    ]
    return input_axes, output_axes


def _rdf(
    folder: Path,
    model: nn.Module,
    document: Mapping[str, Any],
    *,
    name: str,
    description: str | None,
    authors: Sequence[str | Mapping[str, str]] | None,
    license: str,
    tags: Sequence[str],
    classes: Sequence[str],
    arch_title: str,
    preprocessing: list[dict[str, Any]],
    weight_entries: dict[str, Any],
    samples: bool,
) -> dict[str, Any]:
    """The rdf.yaml document of the files written to ``folder``."""
    input_axes, output_axes = _axes(model, classes)
    return {
        "type": "model",
        "format_version": RDF_FORMAT_VERSION,
        "name": name,
        "description": description
        or f"{arch_title} ({model.spatial_dims}D) predicting {', '.join(classes)} "
        "probabilities, exported by napari-unet",
        "authors": [_author(a) for a in (authors or _default_authors(document))],
        "packaged_by": [{"name": f"napari-unet {__version__}"}],
        "cite": [_CITE_UNET] + ([_CITE_UNETPP] if arch_title == "U-Net++" else []),
        "license": license,
        "documentation": "README.md",
        "covers": ["cover.png"],
        "attachments": [_entry(folder, _MODEL_FILE)],
        "tags": sorted(
            {"napari-unet", "unet", "segmentation", "pytorch", f"{model.spatial_dims}d"}
            | ({"unetplusplus"} if arch_title == "U-Net++" else set())
            | set(tags)
        ),
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "inputs": [
            {
                "id": "input",
                "description": "raw image; normalised by the pre-processing",
                "axes": input_axes,
                "test_tensor": _entry(folder, "test_input.npy"),
                **({"sample_tensor": _entry(folder, "sample_input.tif")} if samples else {}),
                "data": {"type": "float32"},
                "preprocessing": preprocessing,
            }
        ],
        "outputs": [
            {
                "id": "output",
                "description": "softmax class probabilities",
                "axes": output_axes,
                "test_tensor": _entry(folder, "test_output.npy"),
                **({"sample_tensor": _entry(folder, "sample_output.tif")} if samples else {}),
                "data": {"type": "float32", "range": [0.0, 1.0]},
            }
        ],
        "weights": weight_entries,
        "config": {
            "bioimageio": {
                "architecture_type": arch_title,
                "model_parameter_count": sum(p.numel() for p in model.parameters()),
            },
            CONFIG_KEY: {"metadata": document, "model_file": _MODEL_FILE},
        },
    }


def _publish(
    folder: Path, staging: Path, out: Path, *, is_zip: bool, validate: bool, test: bool
) -> None:
    """Zip the folder (for a ``.zip`` name), check the package and move it to ``out``."""
    if is_zip:
        _zip_folder(folder, staging)
    if validate:
        _validate(staging)
    if test:
        _core_test(staging)
    replace_with(staging, out, folder=not is_zip)


def _dump_yaml(data: Mapping[str, Any]) -> str:
    import yaml

    class _NoAliases(yaml.SafeDumper):
        # Repeated values (the arguments appear twice) are written out, not as &anchors,
        # which some YAML readers of other tools do not resolve.
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump(data, Dumper=_NoAliases, sort_keys=False, allow_unicode=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _zip_folder(folder: Path, archive: Path) -> None:
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        # rdf.yaml first, then the files it names, in a stable order.
        for path in sorted(folder.iterdir(), key=lambda p: (p.name != "rdf.yaml", p.name)):
            zf.write(path, arcname=path.name)


def _require_spec() -> None:
    try:
        import bioimageio.spec  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"validating the package needs bioimageio.spec ({err}); {_INSTALL_HINT}, "
            "or pass validate=False"
        ) from err


def _model_name(name: str | None, out: Path, arch_title: str) -> str:
    """The given name, checked, or one made from ``out`` that bioimage.io accepts."""
    allowed = set(string.ascii_letters + string.digits + "_+- ()")
    if name is not None:
        if not 5 <= len(name) <= 128 or set(name) - allowed:
            raise ValueError(
                f"`name` {name!r} must have 5 to 128 characters, only letters, digits, spaces "
                "and _+-() (a bioimage.io rule)"
            )
        return name
    stem = "".join(c if c in allowed else "-" for c in out.name.split(".")[0]).strip()
    return stem if len(stem) >= 5 else f"{stem} {arch_title}".strip()[:128]


def _user_keys(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document without the keys that save_model sets itself."""
    owned = {"format", "format_version", "architecture", "arguments", "package_version"}
    return {k: v for k, v in document.items() if k not in owned}


def _default_authors(document: Mapping[str, Any]) -> list[str | Mapping[str, str]]:
    stored = document.get("authors")
    if isinstance(stored, list) and stored:
        return stored
    return ["unknown"]


def _author(author: str | Mapping[str, str]) -> dict[str, str]:
    if isinstance(author, str):
        return {"name": author}
    allowed = {"name", "affiliation", "email", "orcid", "github_user"}
    if "name" not in author or set(author) - allowed:
        raise ValueError(
            f"`authors` entries need 'name' and may have {sorted(allowed - {'name'})}, "
            f"got {sorted(author)}"
        )
    return {k: str(v) for k, v in author.items()}


def _preprocessing(norm: Normalization) -> list[dict[str, Any]]:
    """The stored normalisation as bioimage.io pre-processing steps."""
    if norm.scope == "image":
        if norm.high <= 1:
            raise ValueError(
                f"bioimage.io's scale_range needs an upper percentile above 1, got {norm.high}"
            )
        kwargs = {
            # Only y and x are reduced: per sample, per channel and per z-plane,
            # as napari_unet.normalize.Normalization does.
            "axes": ["y", "x"],
            "min_percentile": float(norm.low),
            "max_percentile": float(norm.high),
            "eps": 1e-6,
        }
        return [{"id": "scale_range", "kwargs": kwargs}]
    if norm.scope == "dataset":
        lo = np.asarray(norm.lo, np.float64)
        hi = np.asarray(norm.hi, np.float64)
        gain = 1.0 / (hi - lo + 1e-6)
        kwargs = {
            "axis": "channel",
            "gain": [float(g) for g in gain],
            "offset": [float(o) for o in -lo * gain],
        }
        return [{"id": "scale_linear", "kwargs": kwargs}]
    return []


def _trace(wrapper: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """TorchScript by tracing; the shape checks in ``forward`` are Python and not recorded."""
    with warnings.catch_warnings():
        # The shape checks convert sizes to Python ints (TracerWarning), and torch >= 2.9
        # deprecates torch.jit; bioimage.io still requires TorchScript.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            return torch.jit.trace(wrapper, example, check_trace=False)


def _validate(path: Path) -> None:
    """Raise unless ``bioimageio.spec`` accepts the package (offline: local files only)."""
    from bioimageio.spec import InvalidDescr, load_description

    descr = load_description(path, perform_io_checks=True)
    if not isinstance(descr, InvalidDescr):
        return
    errors = [
        f"{'.'.join(map(str, e.loc)) or 'rdf'}: {e.msg}"
        for detail in descr.validation_summary.details
        for e in detail.errors
    ]
    _raise_if_broken_spec(errors)
    raise ValueError("the exported package does not validate: " + " | ".join(errors))


def _raise_if_broken_spec(errors: Sequence[str]) -> None:
    """bioimageio.spec <= 0.5.12 cannot serialise with pydantic >= 2.14: say so plainly."""
    if any("package_file_descr_serializer" in e and "index_key" in e for e in errors):
        import bioimageio.spec
        import pydantic

        raise RuntimeError(
            f"bioimageio.spec {bioimageio.spec.__version__} cannot validate any model with "
            f"pydantic {pydantic.VERSION} (bioimageio.spec < 0.5.14 is incompatible with "
            "pydantic >= 2.14): install 'pydantic<2.14', or export with "
            "validate=False (CLI: --no-validate)"
        )


def _core_test(path: Path) -> None:
    try:
        from bioimageio.core import test_model
    except ImportError as err:
        raise ImportError(
            f"testing the package needs bioimageio.core ({err}); {_INSTALL_HINT}"
        ) from err
    summary = test_model(path)
    if summary.status != "passed":
        errors = [f"{detail.name}: {e.msg}" for detail in summary.details for e in detail.errors]
        _raise_if_broken_spec(errors)
        raise ValueError("bioimageio.core's model test failed: " + " | ".join(errors))
