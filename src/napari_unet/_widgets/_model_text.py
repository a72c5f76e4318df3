"""What a biologist reads about a model: what it is for, its object size, its checkpoint.

The architecture (depth, base channels, padding) matters to whoever trains
the model, not to whoever uses it: it goes in the tooltip.
"""

from __future__ import annotations

from typing import Any

__all__ = ["checkpoint_text", "describe_model", "object_diameter", "technical_details"]

_CLASSES = {2: "background / cell", 3: "background / cell / separating border"}


def object_diameter(meta: dict[str, Any]) -> float | None:
    """Typical object diameter (pixels) the model was trained on, when the file says."""
    pretrained = meta.get("pretrained") or {}
    data = (meta.get("training") or {}).get("data") or {}
    for value in (
        meta.get("object_diameter"),
        meta.get("diameter"),
        pretrained.get("object_diameter"),
        pretrained.get("diameter"),
        (pretrained.get("postprocessing") or {}).get("diameter"),
        data.get("object_diameter_px"),
        data.get("diameter"),
    ):
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return None


def checkpoint_text(meta: dict[str, Any]) -> str:
    """Which iteration the weights are from: "best checkpoint, iteration 48 of 60 (stopped)"."""
    training = meta.get("training") or {}
    last = training.get("iteration")
    if last is None:
        return ""
    best = (training.get("best") or {}).get("iteration")
    state = " (stopped early)" if training.get("cancelled") else ""
    if best is not None and best != last:
        return f"best checkpoint, iteration {best} of {last}{state}"
    return f"trained {last} iterations{state}"


def describe_model(meta: dict[str, Any]) -> str:
    """A few lines about a model file: purpose, object size, input, checkpoint."""
    pretrained = meta.get("pretrained") or {}
    training = meta.get("training") or {}
    data = training.get("data") or {}
    if pretrained.get("description"):
        purpose = str(pretrained["description"])
    elif data.get("source") == "napari":
        planes = data.get("planes") or []
        images = sorted({str(p).split(" ← ")[0] for p in planes if " ← " in str(p)})
        what = f" of {', '.join(images[:3])}{' …' if len(images) > 3 else ''}" if images else ""
        purpose = f"Trained in napari on {len(planes)} annotated plane(s){what}."
    else:
        purpose = "A napari-unet model (no description in the file)."
    parts = [purpose]
    diameter = object_diameter(meta)
    if diameter is not None:
        parts.append(f"Objects about {diameter:.0f} px across.")
    if not pretrained.get("description"):  # a bundled model's description says this already
        channels = int(meta.get("in_channels") or 1)
        number = int(meta.get("num_classes") or 0)
        classes = _CLASSES.get(number, f"{number} classes")
        parts.append(f"{channels} channel{'s' if channels != 1 else ''} in; {classes}.")
    checkpoint = checkpoint_text(meta)
    if checkpoint:
        parts.append(checkpoint[0].upper() + checkpoint[1:] + ".")
    return " ".join(parts)


def technical_details(meta: dict[str, Any]) -> str:
    """Architecture line for the tooltip: "unet, depth 4, 8 base channels, same padding"."""
    args = meta.get("arguments", {})
    return (
        f"{meta.get('architecture', '?')}, depth {args.get('depth', '?')}, "
        f"{args.get('base_channels', '?')} base channels, {args.get('padding', '?')} padding"
    )
