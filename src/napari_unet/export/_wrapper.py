"""The network the exported weights hold: a napari-unet model followed by a softmax.

Every exported ``rdf.yaml`` names this class as ``napari_unet.export.ExportWrapper``
(``import_from: napari_unet.export``), so that name must keep working.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..models.registry import architecture_name, build_model

__all__ = ["ExportWrapper"]


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
