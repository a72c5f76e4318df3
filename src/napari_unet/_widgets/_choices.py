"""The Train dock's choices that need PyTorch: the architectures and the devices.

Called once PyTorch is imported (see ``_warmup.when_ready``), never while
the dock is being built in a fresh napari.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["architectures", "build_model", "device_choices"]


def architectures() -> dict[str, type]:
    """Display name -> model class, for the architectures model files can store."""
    from .. import models
    from ..models.registry import ARCHITECTURES

    found = {"U-Net": models.UNet}
    plus = getattr(models, "UNetPlusPlus", None)
    # Offered only once model files can store it (registered), or training could not save.
    if plus is not None and plus in ARCHITECTURES.values():
        found["U-Net++"] = plus
    return found


def device_choices() -> list[tuple[str, str]]:
    """("description", name) of "auto" and every device PyTorch can use here."""
    from ..devices import available_devices, describe_device, select_device

    return [("auto (best available)", "auto")] + [
        (describe_device(select_device(name)), name) for name in available_devices()
    ]


def build_model(architecture: str, **arguments: Any) -> Any:
    """Build an architecture, passing only the arguments its constructor takes."""
    cls = architectures()[architecture]
    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in arguments.items() if k in accepted})
