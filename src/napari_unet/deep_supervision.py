"""Deep supervision for the U-Net++: the hybrid loss on every head, averaged.

The U-Net++ [1]_ attaches a 1x1 convolution head to each top node
``X^{0,1} ... X^{0,depth}`` and trains all of them at once: the loss is the
average of the hybrid loss (cross-entropy plus soft Dice,
:func:`napari_unet.losses.hybrid_loss`) over the heads. This trains every
pruned sub-network, which is what makes pruning at inference possible.

References
----------
.. [1] Z. Zhou, M. M. Rahman Siddiquee, N. Tajbakhsh, J. Liang, "UNet++:
       A Nested U-Net Architecture for Medical Image Segmentation",
       DLMIA 2018. :DOI:`10.1007/978-3-030-00889-5_1`
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .losses import crop_to_output, hybrid_loss

__all__ = ["DeepSupervisionLoss", "deep_supervision_loss", "model_heads"]


def model_heads(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The logits of every head of ``model``, for any architecture.

    Parameters
    ----------
    model : torch.nn.Module
        A :class:`~napari_unet.models.UNetPlusPlus` (its ``forward_heads``),
        or any model returning one logits tensor.
    x : (B, in_channels, *spatial) torch.Tensor
        A batch of input tiles.

    Returns
    -------
    heads : list of torch.Tensor
        Each of shape (B, num_classes, *spatial_out): all heads of a U-Net++
        with deep supervision, else the single output ``[model(x)]``.
    """
    forward_heads = getattr(model, "forward_heads", None)
    if callable(forward_heads):
        return list(forward_heads(x))
    return [model(x)]


def deep_supervision_loss(
    heads: Sequence[torch.Tensor] | torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    head_weights: Sequence[float] | None = None,
    ce_weight: float = 0.5,
    dice_weight: float = 1.0,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """The hybrid loss on every head, averaged (U-Net++ deep supervision).

    Parameters
    ----------
    heads : sequence of (B, C, *spatial_out) torch.Tensor, or one tensor
        Raw logits of each head (:meth:`UNetPlusPlus.forward_heads
        <napari_unet.models.UNetPlusPlus.forward_heads>`). A single tensor
        is one head, so this also serves a plain U-Net.
    targets : (B, *spatial) torch.Tensor of int
        Class index per pixel. Larger than a head's output (valid
        convolutions) is allowed: it is centre-cropped to each head.
    weights : (B, *spatial) torch.Tensor, optional
        Non-negative weight per pixel (e.g. a border weight map); 0 ignores a
        pixel in both loss terms of every head. Cropped like ``targets``.
    head_weights : sequence of float, optional
        Relative weight of each head, normalised to sum to 1. Default: equal
        weights, the papers' average.
    ce_weight, dice_weight, smooth : float, optional
        See :func:`napari_unet.losses.hybrid_loss` (defaults 1/2 and 1, as
        in the U-Net++ papers).

    Returns
    -------
    loss : scalar torch.Tensor
        ``sum_k h_k * hybrid_loss(heads[k], targets, weights)`` with
        ``h_k = head_weights[k] / sum(head_weights)``.

    Raises
    ------
    ValueError
        If ``heads`` is empty or its tensors differ in shape, if
        ``head_weights`` has the wrong length, a negative entry or sums to 0,
        or if ``targets`` / ``weights`` do not fit the heads (see
        :func:`~napari_unet.losses.hybrid_loss`).

    See Also
    --------
    napari_unet.losses.hybrid_loss, DeepSupervisionLoss

    Examples
    --------
    >>> logits = torch.zeros(1, 2, 1, 2)
    >>> targets = torch.tensor([[[0, 1]]])
    >>> round(deep_supervision_loss([logits, logits], targets, smooth=0.0).item(), 4)
    0.8466
    """
    if isinstance(heads, torch.Tensor):
        heads = [heads]
    heads = list(heads)
    if not heads:
        raise ValueError("`heads` must hold at least one logits tensor, got none")
    shape = tuple(heads[0].shape)
    for index, head in enumerate(heads):
        if not isinstance(head, torch.Tensor):
            raise ValueError(f"`heads[{index}]` must be a torch.Tensor, got {type(head).__name__}")
        if tuple(head.shape) != shape:
            raise ValueError(
                f"`heads[{index}]` has shape {tuple(head.shape)}, but `heads[0]` has shape "
                f"{shape}; all heads must have the same shape"
            )
    if head_weights is None:
        factors = [1.0 / len(heads)] * len(heads)
    else:
        factors = [float(h) for h in head_weights]
        if len(factors) != len(heads):
            raise ValueError(
                f"`head_weights` has {len(factors)} entries, expected one per head ({len(heads)})"
            )
        if min(factors) < 0 or sum(factors) <= 0:
            raise ValueError(
                f"`head_weights` must be non-negative with a positive sum, got {factors}"
            )
        total = sum(factors)
        factors = [f / total for f in factors]

    # Same padding (U-Net++): nothing to crop. Valid padding: crop once. Any
    # other mismatch is left to hybrid_loss, whose message names the shapes.
    targets = _crop_if_larger(targets, heads[0])
    if weights is not None:
        weights = _crop_if_larger(weights, heads[0])

    loss = heads[0].new_zeros(())
    for factor, head in zip(factors, heads, strict=True):
        if factor == 0:
            continue  # also skips a head's validation work; it adds nothing
        loss = loss + factor * hybrid_loss(
            head, targets, weights, ce_weight=ce_weight, dice_weight=dice_weight, smooth=smooth
        )
    return loss


def _crop_if_larger(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    spatial, wanted = tuple(x.shape[1:]), tuple(logits.shape[2:])
    if (
        x.ndim == logits.ndim - 1
        and spatial != wanted
        and all(have >= want for have, want in zip(spatial, wanted, strict=True))
    ):
        return crop_to_output(x, logits)
    return x


class DeepSupervisionLoss(nn.Module):
    """Module form of :func:`deep_supervision_loss`.

    ``forward(heads, targets, weights=None)`` with ``heads`` a sequence of
    logits ``(B, C, *spatial)`` (or one tensor), targets and weights
    ``(B, *spatial)``; returns a scalar.

    Parameters
    ----------
    head_weights : sequence of float, optional
        Relative weight per head; default equal.
    ce_weight, dice_weight, smooth : float
        See :func:`napari_unet.losses.hybrid_loss`.
    """

    def __init__(
        self,
        head_weights: Sequence[float] | None = None,
        ce_weight: float = 0.5,
        dice_weight: float = 1.0,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        self.head_weights = None if head_weights is None else tuple(head_weights)
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.smooth = smooth

    def forward(
        self,
        heads: Sequence[torch.Tensor] | torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return deep_supervision_loss(
            heads,
            targets,
            weights,
            head_weights=self.head_weights,
            ce_weight=self.ce_weight,
            dice_weight=self.dice_weight,
            smooth=self.smooth,
        )
