"""Data-parallel training helpers: process group set-up, ranks and the few collectives we need.

``napari-unet train --distributed`` runs under ``torchrun``, which starts one
process per device and sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init` joins the process group
from those variables (NCCL on CUDA, Gloo on the CPU) and picks this rank's
device. Everything here is a no-op, or answers for a single process, when no
process group is running, so the training loop calls it unconditionally.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from .devices import select_device

__all__ = [
    "ENV_VARIABLES",
    "any_rank",
    "barrier",
    "cleanup",
    "env_ready",
    "init",
    "is_distributed",
    "is_main",
    "rank",
    "sum_all",
    "world_size",
]

#: What ``torchrun`` sets and :func:`init` needs.
ENV_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def env_ready() -> bool:
    """True when the ``torchrun`` environment variables are all set."""
    return all(name in os.environ for name in ENV_VARIABLES)


def is_distributed() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group; ``RANK`` before :func:`init`)."""
    if is_distributed():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0))


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0, the only rank that writes files and prints progress."""
    return rank() == 0


def init(device: str | torch.device | None = "auto", *, timeout_s: float = 600) -> torch.device:
    """Join the process group described by the ``torchrun`` environment.

    Parameters
    ----------
    device : str or torch.device, optional
        ``"auto"``/None picks CUDA when present, else the CPU (as
        :func:`~napari_unet.devices.select_device`). On CUDA each rank takes
        ``cuda:LOCAL_RANK``.
    timeout_s : float, optional
        How long collectives wait for the slowest rank (e.g. rank 0 writing
        a checkpoint) before failing.

    Returns
    -------
    device : torch.device
        The device this rank trains on.

    Raises
    ------
    RuntimeError
        If the environment variables of :data:`ENV_VARIABLES` are missing
        (not started by ``torchrun``).

    Notes
    -----
    The backend is NCCL on CUDA and Gloo otherwise (Gloo runs the CPU tests).
    Calling :func:`init` in an initialised group only picks the device.
    """
    if not is_distributed() and not env_ready():
        missing = [name for name in ENV_VARIABLES if name not in os.environ]
        raise RuntimeError(
            f"distributed training needs the torchrun environment ({', '.join(missing)} "
            "missing); start it with `torchrun --nproc_per_node N -m napari_unet.cli train "
            "... --distributed`"
        )
    chosen = select_device(device if device not in (None, "auto") else None)
    if chosen.type == "mps":
        chosen = torch.device("cpu")  # no MPS backend for torch.distributed
    if chosen.type == "cuda":
        chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(chosen)
    if not is_distributed():
        dist.init_process_group(
            backend="nccl" if chosen.type == "cuda" else "gloo",
            timeout=timedelta(seconds=timeout_s),
        )
    return chosen


def cleanup() -> None:
    """Leave the process group (after a barrier, so that no rank leaves early)."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if is_distributed():
        dist.barrier()


def sum_all(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over ranks (a copy; ``value`` itself without a group)."""
    if not is_distributed():
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def any_rank(flag: bool, device: torch.device | None = None) -> bool:
    """True if ``flag`` is True on any rank, so that all ranks stop together."""
    if not is_distributed():
        return bool(flag)
    tensor = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)
