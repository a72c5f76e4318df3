"""What a model file holds, in words: for ``napari-unet info`` and the Predict widget."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["describe_model", "summarize_model"]


def summarize_model(metadata: Mapping[str, Any]) -> str:
    """One line about a model: architecture, channels, classes, training iterations."""
    args = metadata.get("arguments", {})
    text = (
        f"{metadata.get('architecture', '?')} depth {args.get('depth', '?')}, "
        f"{args.get('base_channels', '?')} base channels, {args.get('padding', '?')} padding; "
        f"{metadata.get('in_channels', '?')} channel(s) in, "
        f"{metadata.get('num_classes', '?')} classes"
    )
    training = metadata.get("training") or {}
    if training.get("iteration") is not None:
        text += f"; {training['iteration']} iterations"
    return text


def describe_model(
    metadata: Mapping[str, Any], *, source: str | None = None, parameters: int | None = None
) -> str:
    """Several lines about a model file: architecture, normalisation, training, best scores.

    Parameters
    ----------
    metadata : mapping
        A model file's metadata (:func:`napari_unet.io.read_metadata`).
    source : str, optional
        The file or bundled name, shown first.
    parameters : int, optional
        The number of weights (needs the loaded model), shown when given.

    Returns
    -------
    text : str
        Aligned ``name: value`` lines.
    """
    arguments = ", ".join(f"{k}={v}" for k, v in metadata["arguments"].items())
    lines = [] if source is None else [f"file:          {source}"]
    lines.append(f"architecture:  {metadata['architecture']} ({arguments})")
    if parameters is not None:
        lines.append(f"parameters:    {parameters:,}")
    classes = ", ".join(metadata.get("classes") or []) or metadata.get("num_classes")
    lines.append(f"classes:       {classes}")
    norm = metadata.get("normalization") or {}
    if norm:
        text = f"{norm.get('method', 'percentile')} {norm.get('low')}-{norm.get('high')}, "
        text += f"scope {norm.get('scope')}"
        if norm.get("lo") is not None:
            text += f", lo {norm['lo']}, hi {norm['hi']}"
        lines.append(f"normalisation: {text}")
    lines.append(
        f"created:       {metadata.get('created')} (napari-unet {metadata.get('package_version')})"
    )
    lines.extend(_training_lines(metadata.get("training")))
    return "\n".join(lines)


def _training_lines(training: Mapping[str, Any] | None) -> list[str]:
    if not training:
        return []
    if training.get("finished"):
        state = "finished"
    else:
        state = "cancelled" if training.get("cancelled") else "in progress"
    config = training.get("config") or {}
    lines = [
        f"training:      {training.get('iteration')} of {config.get('iterations')} "
        f"iterations ({state}), {config.get('optimizer')} lr {config.get('lr')}, "
        f"tile {training.get('tile_shape')}, seed {config.get('seed')}, "
        f"{training.get('elapsed_s')} s on {training.get('device')}"
    ]
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
    return lines
