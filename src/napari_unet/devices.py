"""Choosing where PyTorch runs: CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch

__all__ = ["available_devices", "describe_device", "select_device"]


def available_devices() -> list[str]:
    """Names of the devices PyTorch can use here, best first.

    Returns
    -------
    devices : list of str
        Some of ``"cuda"``, ``"mps"`` and always ``"cpu"`` last.
    """
    devices = []
    if torch.cuda.is_available():
        devices.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    devices.append("cpu")
    return devices


def select_device(device: str | torch.device | None = None) -> torch.device:
    """Resolve a device request to a :class:`torch.device`.

    Parameters
    ----------
    device : str or torch.device, optional
        ``None`` or ``"auto"`` picks CUDA, then MPS, then the CPU. Anything
        else (``"cpu"``, ``"cuda:1"``, ...) is checked for availability.

    Returns
    -------
    device : torch.device

    Raises
    ------
    ValueError
        If the requested device does not exist on this machine.
    """
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return torch.device(available_devices()[0])
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"`device` {device!r} is not a device name; use 'auto', 'cpu', 'cuda' or 'mps'"
        ) from err
    if resolved.type not in available_devices():
        raise ValueError(
            f"`device` {device!r} is not available on this machine; "
            f"available: {', '.join(available_devices())} (or 'auto')"
        )
    return resolved


def describe_device(device: torch.device) -> str:
    """A short human-readable description, e.g. ``"CUDA: NVIDIA H200 (139 GiB)"``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"CUDA: {props.name} ({props.total_memory / 2**30:.0f} GiB)"
    if device.type == "mps":
        return "Apple MPS (GPU)"
    return f"CPU ({torch.get_num_threads()} threads)"
