"""The package's documentation: README.md and the cover image (input | prediction)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from .. import __version__
from ..normalize import Normalization
from ._inputs import _SPATIAL_AXES, _size_rule


def _write_docs(
    folder: Path,
    document: Mapping[str, Any],
    model: nn.Module,
    name: str,
    image: np.ndarray,
    probs: np.ndarray,
) -> None:
    """The cover image (input | prediction) and README.md."""
    _write_cover(folder / "cover.png", image, probs)
    (folder / "README.md").write_text(_readme(document, model, name), encoding="utf-8")


def _write_cover(path: Path, image: np.ndarray, probs: np.ndarray) -> None:
    """Input (cropped to the output region) beside the prediction, as an RGB PNG."""
    from ..io import write_image

    # The input cropped to the output's region, axis by axis: an anisotropic 3D network
    # has a smaller halo in Z than in Y and X, so one number does not describe it.
    out_shape = probs.shape[2:]
    start = [(n_in - n_out) // 2 for n_in, n_out in zip(image.shape[1:], out_shape, strict=True)]
    region = tuple(slice(s, s + n) for s, n in zip(start, out_shape, strict=True))
    image = image[(slice(None), *region)]
    if image.ndim == 4:  # 3D: the middle plane
        z = probs.shape[2] // 2
        image, probs = image[:, z], probs[:, :, z]
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
