"""Export to bioimage.io model packages and ONNX, and import our bioimage.io packages.

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

import copy
import datetime as _dt
import hashlib
import io
import json
import logging
import os
import shutil
import string
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__
from ._modelfile import (
    FORMAT_NAME,
    ModelFileError,
    _document,
    _parse_document,
    architecture_name,
    build_model,
    load_model,
    load_model_bytes,
    save_model,
)
from .devices import select_device
from .modelcheck import (
    MAX_RDF_BYTES,
    check_member_name,
    check_zip_members,
    max_parameters,
)
from .normalize import Normalization
from .outputs import check_output, replace_with, temporary_for

__all__ = [
    "ExportWrapper",
    "check_onnx",
    "export_bioimageio",
    "export_onnx",
    "is_bioimageio_package",
    "load_bioimageio",
    "read_bioimageio_metadata",
]

#: The rdf.yaml section that holds our metadata.
CONFIG_KEY = "napari_unet"
_RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
#: The bioimage.io model description format written. Every field used exists in format 0.5;
#: an early 0.5 patch level keeps readers that bundle an older bioimageio.spec working,
#: and newer bioimageio.spec versions upgrade it on load (0.5.12 validates it as 0.5.12).
RDF_FORMAT_VERSION = "0.5.4"
_MODEL_FILE = "model.safetensors"
_INSTALL_HINT = "install the export extra: pip install 'napari-unet-cells[export]'"
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
_SPATIAL_AXES = {2: ("y", "x"), 3: ("z", "y", "x")}


class ExportWrapper(nn.Module):
    """A napari-unet network followed by a softmax over the classes.

    Exported models return probabilities rather than logits, the same maps
    that napari-unet's own prediction computes, so that every consumer of the
    package (which may not know about logits) sees them. This class is the
    ``architecture`` of the bioimage.io ``pytorch_state_dict`` weights.

    Parameters
    ----------
    architecture : str
        Registry name (``"unet"``, ``"unetplusplus"``), see
        :data:`napari_unet.io.ARCHITECTURES`.
    arguments : dict
        The architecture's constructor arguments (its ``config()``).

    Examples
    --------
    >>> net = ExportWrapper("unet", {"depth": 1, "base_channels": 2, "padding": "same"})
    >>> probs = net(torch.rand(1, 1, 8, 8))
    >>> probs.shape, bool(torch.allclose(probs.sum(dim=1), torch.ones(1, 8, 8)))
    (torch.Size([1, 2, 8, 8]), True)
    """

    def __init__(self, architecture: str, arguments: Mapping[str, Any]) -> None:
        super().__init__()
        self.model = build_model(architecture, arguments)
        self.eval()

    @classmethod
    def from_model(cls, model: nn.Module) -> ExportWrapper:
        """Wrap a copy of a trained model (on the CPU, in eval mode)."""
        wrapper = cls(architecture_name(model), model.config())
        wrapper.model.load_state_dict(model.state_dict())
        return wrapper.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities.

        Parameters
        ----------
        x : torch.Tensor
            Normalised input, (batch, in_channels, *spatial), of a valid size.

        Returns
        -------
        probabilities : torch.Tensor
            (batch, num_classes, *output spatial), summing to 1 over the classes.
        """
        return torch.softmax(self.model(x), dim=1)


# -- input resolution --------------------------------------------------------------------------


def _resolve(
    model: str | os.PathLike | tuple[nn.Module, Mapping[str, Any]],
) -> tuple[nn.Module, dict[str, Any]]:
    """A CPU, eval-mode copy of the model and its full metadata document."""
    if isinstance(model, (str, os.PathLike)):
        loaded, document = load_model(model, device="cpu")
        return loaded.eval(), document
    if not (isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], nn.Module)):
        raise ValueError(
            "`model` must be a model file path or a (model, metadata) tuple, got "
            f"{type(model).__name__}"
        )
    net, metadata = model
    net = copy.deepcopy(net).cpu().eval()
    metadata = dict(metadata or {})
    if metadata.get("format") == FORMAT_NAME:
        # A document from load_model(): keep it, provided it describes this network.
        name = architecture_name(net)
        if metadata.get("architecture") != name or metadata.get("arguments") != net.config():
            raise ValueError(
                f"`metadata` describes {metadata.get('architecture')!r} "
                f"{metadata.get('arguments')}, but `model` is {name!r} {net.config()}"
            )
        return net, json.loads(json.dumps(metadata))
    return net, _document(net, metadata)


def _check_out(out: str | os.PathLike, overwrite: bool) -> Path:
    out = Path(out)
    if out.is_symlink():
        check_output(out, overwrite=overwrite)  # refuses links at an output name
    if not out.parent.is_dir():
        raise FileNotFoundError(f"`out`: folder {out.parent} does not exist")
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
        if out.is_dir() and any(out.iterdir()) and not is_bioimageio_package(out):
            # Never delete a folder that is not a package we could have written.
            raise FileExistsError(
                f"{out} is a non-empty folder that is not a bioimage.io package; "
                "refusing to replace it"
            )
    return out


# -- test tensors, cover, documentation --------------------------------------------------------


def _size_rule(model: nn.Module) -> tuple[int, int, int]:
    """(min, step, halo) of every spatial axis: valid sizes are ``min + k * step``."""
    step = model.divisor
    minimum = model.valid_input_shape((1,) * model.spatial_dims)[0]
    return minimum, step, model.halo[0]


def _largest_valid(model: nn.Module, size: int) -> int | None:
    minimum, step, _ = _size_rule(model)
    if size < minimum:
        return None
    return minimum + (size - minimum) // step * step


def _synthetic_input(model: nn.Module) -> np.ndarray:
    """A seeded smooth image with blob-like structures, (C, *spatial), float32."""
    from scipy import ndimage

    wanted = (64, 64) if model.spatial_dims == 2 else (16, 32, 32)
    shape = model.valid_input_shape(wanted)
    rng = np.random.default_rng(0)
    channels = []
    for _ in range(model.in_channels):
        noise = rng.random(shape)
        smooth = ndimage.gaussian_filter(noise, sigma=3.0, mode="reflect")
        # Stretch, so the percentile normalisation sees a real intensity range.
        smooth = (smooth - smooth.min()) / (np.ptp(smooth) + 1e-12)
        channels.append(1000.0 * smooth + 100.0 * rng.random(shape))
    return np.stack(channels).astype(np.float32)


def _sample_input(model: nn.Module, sample: np.ndarray) -> np.ndarray:
    """The user's sample as (C, *spatial) float32, centre-cropped to a valid size."""
    sample = np.asarray(sample)
    if not np.issubdtype(sample.dtype, np.number) or np.iscomplexobj(sample):
        raise ValueError(f"`sample` must be a real-valued image, got dtype {sample.dtype}")
    dims = model.spatial_dims
    if sample.ndim == dims:
        sample = sample[np.newaxis]
    if sample.ndim != dims + 1 or sample.shape[0] != model.in_channels:
        raise ValueError(
            f"`sample` has shape {sample.shape}; the model expects "
            f"({model.in_channels}, {', '.join(_SPATIAL_AXES[dims]).upper()})"
            + (f" or ({', '.join(_SPATIAL_AXES[dims]).upper()})" if model.in_channels == 1 else "")
        )
    # Keep test tensors small: they are stored in the package and run by every validator.
    caps = (256, 256) if dims == 2 else (32, 128, 128)
    slices = [slice(None)]
    for n, cap in zip(sample.shape[1:], caps, strict=True):
        size = _largest_valid(model, min(n, cap))
        if size is None:
            minimum = _size_rule(model)[0]
            raise ValueError(
                f"`sample` (shape {sample.shape}) is too small: every spatial axis needs at "
                f"least {minimum} pixels for this model"
            )
        start = (n - size) // 2
        slices.append(slice(start, start + size))
    return np.ascontiguousarray(sample[tuple(slices)], dtype=np.float32)


def _predict(
    wrapper: ExportWrapper, normalization: Normalization, image: np.ndarray
) -> np.ndarray:
    """Probabilities for one (C, *spatial) image: (1, classes, *output spatial)."""
    normalized = normalization(image, channel_axis=0)
    with torch.no_grad():
        return wrapper(torch.from_numpy(normalized[np.newaxis])).numpy()


def _write_cover(path: Path, image: np.ndarray, probs: np.ndarray, halo: int) -> None:
    """Input (cropped to the output region) beside the prediction, as an RGB PNG."""
    from .io import write_image

    if image.ndim == 4:  # 3D: the middle plane of the output
        z_out = probs.shape[2] // 2
        image, probs = image[:, z_out + halo], probs[:, :, z_out]
    if halo:
        image = image[:, halo:-halo, halo:-halo]
    gray = image[0].astype(np.float64)
    lo, hi = np.percentile(gray, [1, 99.8])
    gray = np.clip((gray - lo) / (hi - lo + 1e-12), 0, 1)
    left = np.repeat(gray[..., np.newaxis], 3, axis=-1)
    p = probs[0]
    if p.shape[0] == 2:
        right = np.repeat(p[1][..., np.newaxis], 3, axis=-1)
    else:
        # One colour per class, weighted by its probability.
        palette = np.array(
            [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200]], float
        )
        colours = palette[np.arange(p.shape[0]) % len(palette)] / 255.0
        right = np.einsum("chw,cr->hwr", p, colours)
    cover = np.concatenate([left, right], axis=1)
    # At least 256 pixels high, by pixel repetition (no smoothing of the prediction).
    factor = max(1, -(-256 // cover.shape[0]))
    cover = np.kron(cover, np.ones((factor, factor, 1)))
    write_image(path, np.round(255 * np.clip(cover, 0, 1)).astype(np.uint8))


def _readme(document: Mapping[str, Any], model: nn.Module, name: str) -> str:
    arguments = document["arguments"]
    norm = Normalization.from_dict(document.get("normalization"))
    minimum, step, halo = _size_rule(model)
    axes = ", ".join(_SPATIAL_AXES[model.spatial_dims])
    classes = document.get("classes") or [f"class{i}" for i in range(model.num_classes)]
    if norm.scope == "image":
        pre = (
            f"percentile normalisation of each image, channel and {'/'.join(('y', 'x'))} "
            f"plane: the {norm.low} and {norm.high} percentiles are mapped to 0 and 1 "
            "(`scale_range`)"
        )
    elif norm.scope == "dataset":
        pre = (
            "fixed per-channel intensities (percentiles "
            f"{norm.low}/{norm.high} of the training set) mapped to 0 and 1 (`scale_linear`)"
        )
    else:
        pre = "none (the network sees the raw intensities as float32)"
    lines = [
        f"# {name}",
        "",
        f"A {'U-Net++' if document['architecture'] == 'unetplusplus' else 'U-Net'} "
        "for semantic segmentation, trained and exported with "
        f"[napari-unet](https://github.com/napari-unet/napari-unet) {__version__}.",
        "",
        "## Inputs and outputs",
        "",
        f"- Input `input`: (batch, channel, {axes}) float32, {model.in_channels} channel(s). "
        f"Valid sizes of every spatial axis: {minimum} + k * {step}.",
        f"- Pre-processing: {pre}.",
        f"- Output `output`: (batch, channel, {axes}) float32 softmax probabilities of the "
        f"classes {', '.join(classes)}; the softmax is part of the exported network.",
    ]
    if halo:
        lines.append(
            f"- The network uses unpadded ('valid') convolutions: the output is {halo} pixels "
            "smaller than the input on every side. Pad the image by that much (mirroring) "
            "to predict every pixel; tiles that overlap by twice the halo give exactly "
            "the whole-image result."
        )
    else:
        lines.append(
            "- Zero-padded ('same') convolutions: the output has the input's size. Tiles "
            f"should overlap by at least {2 * model.context} pixels for seamless results."
        )
    lines += [
        "",
        "## Architecture",
        "",
        f"`{document['architecture']}` with "
        + ", ".join(f"`{k}={v}`" for k, v in arguments.items())
        + f"; {sum(p.numel() for p in model.parameters()):,} parameters.",
        "",
        "## Training",
        "",
    ]
    training = document.get("training") or {}
    if training:
        config = training.get("config") or {}
        lines.append(
            f"{training.get('iteration')} iterations ({config.get('optimizer')}, learning "
            f"rate {config.get('lr')}, loss {config.get('loss')}, seed {config.get('seed')})."
        )
        best = training.get("best")
        if best:
            scores = ", ".join(f"{k} {v:.4f}" for k, v in best["metrics"].items())
            lines.append(f"Best validation scores (iteration {best['iteration']}): {scores}.")
    else:
        lines.append("No training record is stored with this model.")
    lines += [
        "",
        "The complete napari-unet metadata is in `config.napari_unet` of `rdf.yaml`; "
        "`napari_unet.io.load_model` reads this package back.",
        "",
        "## Validation",
        "",
        "The test tensors were computed by napari-unet's own pre-processing and network "
        "when the package was written; `bioimageio.core` reproduces them with every "
        "weight format. Validate the model on annotated images of your own data "
        "(`napari-unet evaluate`) before use.",
        "",
        "## Limitations",
        "",
        "A network trained on one kind of images usually fails on others (microscope, "
        "stain, magnification); check its output before relying on it.",
        "",
    ]
    return "\n".join(lines)


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
    minimum, step, halo = _size_rule(net)
    classes = [str(c) for c in document.get("classes") or []]
    if len(classes) != net.num_classes:
        classes = [f"class{i}" for i in range(net.num_classes)]
    arch_title = "U-Net++" if document["architecture"] == "unetplusplus" else "U-Net"
    name = _model_name(name, out, arch_title)
    torch_version = torch.__version__.split("+")[0]

    # Written under temporary names beside `out` and moved into place only when
    # complete and checked (outputs.replace_with); orphans of a crash are named
    # for outputs.remove_orphans.
    is_zip = out.suffix.lower() == ".zip"
    staging = temporary_for(out, folder=not is_zip)
    folder = temporary_for(out.with_name(out.stem), folder=True) if is_zip else staging
    try:
        folder.mkdir(exist_ok=True)
        np.save(folder / "test_input.npy", image[np.newaxis])
        np.save(folder / "test_output.npy", probs)
        samples = net.spatial_dims == 2
        if samples:
            # Sample tensors are for people (and FAIR checks); imageio reads TIFF pages
            # one at a time, so only 2D models get them.
            import tifffile

            tifffile.imwrite(folder / "sample_input.tif", image, photometric="minisblack")
            tifffile.imwrite(folder / "sample_output.tif", probs[0], photometric="minisblack")
        _write_cover(folder / "cover.png", image, probs, halo)
        (folder / "README.md").write_text(_readme(document, net, name), encoding="utf-8")
        save_model(net, folder / _MODEL_FILE, metadata=_user_keys(document))
        # Plain tensors only: readable with torch.load(weights_only=True).
        state = {k: v.detach().clone() for k, v in wrapper.state_dict().items()}
        torch.save(state, folder / "weights.pt")
        (folder / "environment.yaml").write_text(
            "name: napari-unet\nchannels:\n  - conda-forge\n  - nodefaults\ndependencies:\n"
            f"  - python>=3.10\n  - pytorch>={torch_version}\n  - pip\n  - pip:\n"
            f"    - napari-unet-cells>={__version__}\n",
            encoding="utf-8",
        )
        example = torch.from_numpy(normalization(image, channel_axis=0)[np.newaxis])

        def entry(source: str, **fields: Any) -> dict[str, Any]:
            return {"source": source, "sha256": _sha256(folder / source), **fields}

        weight_entries: dict[str, Any] = {
            "pytorch_state_dict": entry(
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
                dependencies=entry("environment.yaml"),
                comment="napari_unet.export.ExportWrapper: the network and a softmax",
            )
        }
        if "torchscript" in weights:
            _trace(wrapper, example).save(str(folder / "weights_torchscript.pt"))
            weight_entries["torchscript"] = entry(
                "weights_torchscript.pt",
                pytorch_version=torch_version,
                parent="pytorch_state_dict",
                comment="traced with torch.jit.trace; includes the softmax",
            )
        if "onnx" in weights:
            opset = _onnx_export(wrapper, example, folder / "weights.onnx")
            weight_entries["onnx"] = entry(
                "weights.onnx",
                opset_version=opset,
                parent="pytorch_state_dict",
                comment="torch.onnx.export (dynamo); includes the softmax",
            )

        spatial = _SPATIAL_AXES[net.spatial_dims]
        channel_names = [f"channel{i}" for i in range(net.in_channels)]
        input_axes: list[dict[str, Any]] = [
            {"type": "batch"},
            {"type": "channel", "channel_names": channel_names},
        ] + [
            {"type": "space", "id": axis, "size": {"min": minimum, "step": step}}
            for axis in spatial
        ]
        output_axes: list[dict[str, Any]] = [
            {"type": "batch"},
            {"type": "channel", "channel_names": classes},
        ] + [
            {
                "type": "space",
                "id": axis,
                # The valid U-Net's output is the input less the halo on each side.
                "size": {"tensor_id": "input", "axis_id": axis, "offset": -2 * halo},
            }
            for axis in spatial
        ]
        rdf: dict[str, Any] = {
            "type": "model",
            "format_version": RDF_FORMAT_VERSION,
            "name": name,
            "description": description
            or f"{arch_title} ({net.spatial_dims}D) predicting {', '.join(classes)} "
            "probabilities, exported by napari-unet",
            "authors": [_author(a) for a in (authors or _default_authors(document))],
            "packaged_by": [{"name": f"napari-unet {__version__}"}],
            "cite": [_CITE_UNET] + ([_CITE_UNETPP] if arch_title == "U-Net++" else []),
            "license": license,
            "documentation": "README.md",
            "covers": ["cover.png"],
            "attachments": [entry(_MODEL_FILE)],
            "tags": sorted(
                {"napari-unet", "unet", "segmentation", "pytorch", f"{net.spatial_dims}d"}
                | ({"unetplusplus"} if arch_title == "U-Net++" else set())
                | set(tags)
            ),
            "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "inputs": [
                {
                    "id": "input",
                    "description": "raw image; normalised by the pre-processing",
                    "axes": input_axes,
                    "test_tensor": entry("test_input.npy"),
                    **({"sample_tensor": entry("sample_input.tif")} if samples else {}),
                    "data": {"type": "float32"},
                    "preprocessing": preprocessing,
                }
            ],
            "outputs": [
                {
                    "id": "output",
                    "description": "softmax class probabilities",
                    "axes": output_axes,
                    "test_tensor": entry("test_output.npy"),
                    **({"sample_tensor": entry("sample_output.tif")} if samples else {}),
                    "data": {"type": "float32", "range": [0.0, 1.0]},
                }
            ],
            "weights": weight_entries,
            "config": {
                "bioimageio": {
                    "architecture_type": arch_title,
                    "model_parameter_count": sum(p.numel() for p in net.parameters()),
                },
                CONFIG_KEY: {"metadata": document, "model_file": _MODEL_FILE},
            },
        }
        (folder / "rdf.yaml").write_text(_dump_yaml(rdf), encoding="utf-8")
        if is_zip:
            _zip_folder(folder, staging)
        if validate:
            _validate(staging)
        if test:
            _core_test(staging)
        replace_with(staging, out, folder=not is_zip)
    finally:
        _remove(staging)
        _remove(folder)
    return out


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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


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


# -- ONNX --------------------------------------------------------------------------------------

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


# -- bioimage.io import ------------------------------------------------------------------------


def is_bioimageio_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a bioimage.io package: a folder or zip with ``rdf.yaml``.

    Only the names are looked at; a zip written by ``torch.save`` (also a zip
    archive) is not a package.
    """
    path = Path(path)
    if path.is_dir():
        return any((path / n).is_file() for n in _RDF_NAMES)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n in archive.namelist() for n in _RDF_NAMES)
    except (zipfile.BadZipFile, OSError):
        return False


def _weights_limit() -> int:
    """Largest weights file read from a package: the parameter budget in float32, plus slack."""
    return 4 * max_parameters() + 16 * 2**20


class _Package:
    """Read files of a package folder or zip by their name in rdf.yaml.

    A zip's directory is checked before anything in it is read (member names,
    count, total size, compression ratio), and every read has a size limit,
    checked against the directory (zip) or the file system (folder) first.
    Nothing is extracted to disk.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip = None
        if not path.is_dir():
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError, ValueError) as err:
                raise ModelFileError(f"{path} is not a readable zip file ({err})") from err
            try:
                # Several weight formats (safetensors, state dict, TorchScript, ONNX) + extras.
                check_zip_members(self._zip, source=path, max_total=4 * _weights_limit())
            except ModelFileError:
                self._zip.close()
                raise

    def __enter__(self) -> _Package:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._zip is not None:
            self._zip.close()

    def read(self, name: str, limit: int) -> bytes:
        """The bytes of member ``name``, refused if larger than ``limit`` bytes."""
        # Package-relative names only: never read outside the package.
        if not isinstance(name, str):
            raise ModelFileError(f"{self.path}: a file name in rdf.yaml is {name!r}, not a string")
        check_member_name(name, source=self.path)
        try:
            if self._zip is not None:
                size = self._zip.getinfo(name).file_size
            else:
                file = self.path / name
                if not file.resolve().is_relative_to(self.path.resolve()):
                    raise ModelFileError(
                        f"{self.path}: refusing to read {name!r} (it leads outside the package)"
                    )
                if file.exists() and not file.is_file():
                    raise ModelFileError(f"{self.path}: {name!r} is not a regular file")
                size = file.stat().st_size
        except (KeyError, FileNotFoundError) as err:
            raise ModelFileError(f"{self.path} is incomplete: it lacks {name!r}") from err
        if size > limit:
            raise ModelFileError(
                f"{self.path}: {name} has {size} bytes; napari-unet reads at most {limit} "
                f"bytes for it. Nothing was read"
            )
        try:
            if self._zip is not None:
                # zipfile never returns more than the size in the directory (checked above).
                return self._zip.read(name)
            return (self.path / name).read_bytes()[: limit + 1]
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
            raise ModelFileError(f"{self.path}: cannot read {name!r} ({err})") from err

    def rdf(self) -> dict[str, Any]:
        import yaml

        for name in _RDF_NAMES:
            try:
                text = self.read(name, MAX_RDF_BYTES)
            except ModelFileError as err:
                if "lacks" in str(err):
                    continue
                raise
            try:
                # YAML aliases can make a small file expand exponentially once walked.
                if any(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text, yaml.SafeLoader)):
                    raise ModelFileError(
                        f"{self.path}: {name} uses YAML aliases (*name), which napari-unet "
                        "does not read (its own exports have none)"
                    )
                rdf = yaml.safe_load(text)
            except (yaml.YAMLError, RecursionError, ValueError) as err:
                if isinstance(err, ModelFileError):
                    raise
                raise ModelFileError(f"{self.path}: {name} is not valid YAML ({err})") from err
            if not isinstance(rdf, dict):
                raise ModelFileError(f"{self.path}: {name} is not a YAML mapping")
            return rdf
        raise ModelFileError(f"{self.path} is not a bioimage.io package: no rdf.yaml")


def _file_entry(rdf: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    attachments = rdf.get("attachments")
    for entry in attachments if isinstance(attachments, list) else []:
        if isinstance(entry, Mapping) and entry.get("source") == name:
            return entry
    return None


def load_bioimageio(
    path: str | os.PathLike, *, device: str | torch.device | None = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a bioimage.io package exported by napari-unet.

    Parameters
    ----------
    path : str or path-like
        A package folder or zip (``.bioimageio.zip``) written by
        :func:`export_bioimageio`.
    device : str or torch.device, optional
        Where to put the model.

    Returns
    -------
    model : nn.Module
        The network (logits, as from :func:`napari_unet.io.load_model`; not
        the softmax wrapper), in eval mode.
    metadata : dict
        The napari-unet metadata stored in ``config.napari_unet``.

    Raises
    ------
    ModelFileError
        If the package was not exported by napari-unet (no
        ``config.napari_unet``), lacks files, or its files do not match the
        checksums in ``rdf.yaml``.

    Notes
    -----
    The weights come from the package's ``model.safetensors`` attachment
    (checked against its sha256); a package without it falls back to the
    ``pytorch_state_dict`` weights, read with ``torch.load(weights_only=True)``,
    which loads tensors only and refuses pickled code. ``bioimageio.spec`` is
    not needed for loading.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model package {path} does not exist")
    if device is not None:
        device = select_device(device)  # a clear error for "cuda" without a GPU, before reading
    with _Package(path) as package:
        rdf = package.rdf()
        ours, document = _our_config(path, rdf)
        model_file = ours.get("model_file")
        if isinstance(model_file, str) and _file_entry(rdf, model_file) is not None:
            data = package.read(model_file, _weights_limit())
            _check_sha(path, model_file, data, _file_entry(rdf, model_file))
            model = _model_from_safetensors(path, data, device)
        else:
            model = _model_from_state_dict(path, package, rdf, document, device)
    if architecture_name(model) != document["architecture"] or model.config() != dict(
        document["arguments"]
    ):
        raise ModelFileError(
            f"{path}: the weights' architecture does not match config.{CONFIG_KEY}.metadata"
        )
    return model, document


def read_bioimageio_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The napari-unet metadata of a package from :func:`export_bioimageio`, without weights.

    Raises
    ------
    ModelFileError
        If the package was not exported by napari-unet.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model package {path} does not exist")
    with _Package(path) as package:
        return _our_config(path, package.rdf())[1]


def _our_config(path: Path, rdf: Mapping[str, Any]) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """``config.napari_unet`` and the metadata document in it, or a clear refusal."""
    config = rdf.get("config") if isinstance(rdf.get("config"), Mapping) else {}
    ours = config.get(CONFIG_KEY)
    if not isinstance(ours, Mapping) or not isinstance(ours.get("metadata"), Mapping):
        weights = rdf.get("weights") if isinstance(rdf.get("weights"), Mapping) else {}
        formats = ", ".join(sorted(map(str, weights))) or "none"
        raise ModelFileError(
            f"{path} is a bioimage.io {rdf.get('type', 'resource')} "
            f"({rdf.get('name', 'unnamed')!r}) but was not exported by napari-unet: its "
            f"rdf.yaml has no config.{CONFIG_KEY}.metadata (architecture, arguments, "
            f"normalisation), so its weights ({formats}) cannot be mapped to a napari-unet "
            "architecture. Run it with bioimageio.core, deepImageJ or ilastik instead"
        )
    try:
        header = {"napari_unet": json.dumps(dict(ours["metadata"]))}
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{path}: config.{CONFIG_KEY} is invalid ({err})") from err
    return ours, _parse_document(path, header)


def _check_sha(path: Path, name: str, data: bytes, entry: Mapping[str, Any] | None) -> None:
    expected = (entry or {}).get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise ModelFileError(
            f"{path}: {name} does not match the sha256 in rdf.yaml (corrupt or modified)"
        )


def _model_from_safetensors(path: Path, data: bytes, device: Any) -> nn.Module:
    # From memory: no temporary copy on disk.
    model, _ = load_model_bytes(data, source=f"{path}: its {_MODEL_FILE}", device=device)
    return model


def _model_from_state_dict(
    path: Path, package: _Package, rdf: Mapping[str, Any], document: Mapping[str, Any], device: Any
) -> nn.Module:
    weights = rdf.get("weights") if isinstance(rdf.get("weights"), Mapping) else {}
    entry = weights.get("pytorch_state_dict")
    if not isinstance(entry, Mapping) or not isinstance(entry.get("source"), str):
        raise ModelFileError(
            f"{path} has neither a {_MODEL_FILE} attachment nor pytorch_state_dict weights"
        )
    # Built first: the stored arguments and the parameter budget are checked before any weights.
    wrapper = ExportWrapper(document["architecture"], document["arguments"])
    data = package.read(entry["source"], _weights_limit())
    _check_sha(path, entry["source"], data, entry)
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):  # torch.save's format: its sizes, before loading
            with zipfile.ZipFile(io.BytesIO(data)) as inner:
                check_zip_members(
                    inner,
                    source=f"{path}: {entry['source']}",
                    max_total=_weights_limit(),
                    max_members=100_000,
                )
    except (zipfile.BadZipFile, ValueError, EOFError) as err:
        if isinstance(err, ModelFileError):
            raise
        raise ModelFileError(f"{path}: {entry['source']} is not a readable zip ({err})") from err
    try:
        # weights_only: tensors and plain containers only; pickled code is refused.
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling failure means a bad or unsafe file
        raise ModelFileError(
            f"{path}: cannot read the pytorch_state_dict weights safely ({err})"
        ) from err
    try:
        wrapper.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise ModelFileError(
            f"{path}: the pytorch_state_dict weights do not fit {document['architecture']!r} "
            f"{document['arguments']}: {err}"
        ) from err
    model = wrapper.model.eval()
    return model.to(device) if device is not None else model
