"""The model registry: architecture names, their classes and building from metadata.

A model file stores its architecture by name (``"unet"``, ``"unetplusplus"``)
with the keyword arguments that rebuild it; this registry maps the names to
classes. Third-party architectures become loadable with
:func:`register_architecture`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from ..modelcheck import ModelFileError, check_budget, validate_arguments
from .unet import UNet
from .unetpp import UNetPlusPlus

__all__ = ["ARCHITECTURES", "architecture_name", "build_model", "register_architecture"]

#: Architecture name -> class. The class must take its :meth:`config` as keyword arguments.
ARCHITECTURES: dict[str, type[nn.Module]] = {"unet": UNet, "unetplusplus": UNetPlusPlus}


def register_architecture(name: str, cls: type[nn.Module]) -> None:
    """Make an architecture loadable from model files.

    Parameters
    ----------
    name : str
        The name stored in the metadata (``"unet"``, ``"unetplusplus"``, ...).
    cls : type
        An ``nn.Module`` subclass with a ``config()`` method returning the
        keyword arguments that rebuild it.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"`cls` must be an nn.Module subclass, got {cls!r}")
    if not callable(getattr(cls, "config", None)):
        raise ValueError(f"`cls` {cls.__name__} needs a config() method to be saved and loaded")
    ARCHITECTURES[name] = cls


def architecture_name(model: nn.Module) -> str:
    """The registry name of ``model``'s class.

    Raises
    ------
    ValueError
        If the class is not registered (see :func:`register_architecture`).
    """
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise ValueError(
        f"`model` is a {type(model).__name__}, which is not a registered architecture "
        f"({', '.join(sorted(ARCHITECTURES))}); see register_architecture()"
    )


def build_model(architecture: str, arguments: Mapping[str, Any]) -> nn.Module:
    """Build an untrained model from its registry name and constructor arguments.

    Raises
    ------
    ModelFileError
        If the architecture is unknown, the arguments do not fit it, or they
        imply more parameters than :func:`napari_unet.modelcheck.max_parameters`.
    """
    if architecture not in ARCHITECTURES:
        raise ModelFileError(
            f"unknown architecture {architecture!r}; this version of napari-unet knows "
            f"{', '.join(sorted(ARCHITECTURES))} (a newer version may be needed)"
        )
    # The arguments come from a file: check their ranges and the parameters they imply
    # before anything is allocated.
    arguments = validate_arguments(architecture, arguments)
    check_budget(architecture, arguments)
    try:
        return ARCHITECTURES[architecture](**dict(arguments))
    except (TypeError, ValueError) as err:
        raise ModelFileError(
            f"the arguments stored for architecture {architecture!r} are invalid: {err}"
        ) from err


# -- writing -----------------------------------------------------------------------------------
