"""Losses for training: weighted cross-entropy, soft Dice and the hybrid of both.

All functions take raw logits ``(batch, classes, *spatial)``, integer targets
``(batch, *spatial)`` with values in ``[0, classes)`` and optional
non-negative pixel weights ``(batch, *spatial)``, in 2D or 3D. A weight of 0
removes a pixel from the loss entirely (sparse annotation): it counts in
neither numerator nor denominator, and its target value is not used.

With the paper's valid convolutions the network output is smaller than its
input, so targets and weights must first be cropped to the output, with
:func:`crop_to_output`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .models import center_crop

__all__ = [
    "HybridLoss",
    "SoftDiceLoss",
    "WeightedCrossEntropyLoss",
    "crop_to_output",
    "hybrid_loss",
    "soft_dice_loss",
    "weighted_cross_entropy",
]


def crop_to_output(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Centre-crop targets or weights ``(batch, *spatial)`` to the logits' size.

    Parameters
    ----------
    x : (B, *spatial) torch.Tensor
        Targets or weights for the network's input tile.
    logits : (B, C, *spatial_out) torch.Tensor
        The network output; ``spatial_out`` may be smaller than ``spatial``
        (valid convolutions), by an even amount per axis for the U-Net.

    Returns
    -------
    cropped : (B, *spatial_out) torch.Tensor
        A view of ``x``.

    Examples
    --------
    >>> targets = torch.zeros(2, 572, 572, dtype=torch.long)
    >>> crop_to_output(targets, torch.zeros(2, 2, 388, 388)).shape
    torch.Size([2, 388, 388])
    """
    if x.ndim != logits.ndim - 1:
        raise ValueError(
            f"`x` (shape {tuple(x.shape)}) must have the logits' dimensions minus the "
            f"class axis: (batch, *spatial) for logits of shape {tuple(logits.shape)}"
        )
    return center_crop(x.unsqueeze(1), tuple(logits.shape[2:])).squeeze(1)


def _check(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None
) -> torch.Tensor:
    """Validate shapes and return the weights as a float tensor (ones if absent)."""
    if logits.ndim < 3:
        raise ValueError(
            f"`logits` must have shape (batch, classes, *spatial), got {tuple(logits.shape)}"
        )
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(targets.shape) != expected:
        raise ValueError(
            f"`targets` (shape {tuple(targets.shape)}) must have shape {expected}: "
            f"(batch, *spatial) of `logits` (shape {tuple(logits.shape)}); "
            "crop them with crop_to_output"
        )
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(f"`targets` must hold integer class indices, got {targets.dtype}")
    if weights is None:
        return torch.ones(expected, dtype=logits.dtype, device=logits.device)
    if tuple(weights.shape) != expected:
        raise ValueError(
            f"`weights` (shape {tuple(weights.shape)}) must have the shape of `targets` "
            f"({expected})"
        )
    return weights.to(dtype=logits.dtype)


def _safe_targets(targets: torch.Tensor, weights: torch.Tensor, classes: int) -> torch.Tensor:
    """Targets with ignored pixels set to class 0, checked against the class count."""
    targets = torch.where(weights > 0, targets.long(), torch.zeros_like(targets, dtype=torch.long))
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= classes):
        raise ValueError(
            f"`targets` must lie in [0, {classes}) where weights are non-zero, got values in "
            f"[{int(targets.min())}, {int(targets.max())}]"
        )
    return targets


def weighted_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Pixel-wise softmax cross-entropy weighted by a weight map (the paper's energy).

    Parameters
    ----------
    logits : (B, C, *spatial) torch.Tensor
        Raw network output.
    targets : (B, *spatial) torch.Tensor of int
        Class index per pixel.
    weights : (B, *spatial) torch.Tensor, optional
        Non-negative weight per pixel, e.g. from
        :func:`napari_unet.weights.weight_map`; 0 ignores a pixel. Default: 1.

    Returns
    -------
    loss : scalar torch.Tensor
        ``sum(w * ce) / sum(w)`` over all pixels of the batch, where
        ``ce = -log softmax(logits)[target]``; 0 if every weight is 0.

    See Also
    --------
    soft_dice_loss, hybrid_loss, WeightedCrossEntropyLoss

    Notes
    -----
    The paper's energy is ``E = sum_x w(x) log p_l(x)(x)``; dividing by the sum
    of the weights makes this a weighted mean, as ``torch.nn.CrossEntropyLoss``
    does with class weights, so the loss scale (and the useful learning rate)
    depends neither on the tile size nor on how much of it is annotated, and
    scaling all weights by a constant leaves it unchanged. Ignored pixels
    (``w = 0``) add nothing to the denominator.

    Examples
    --------
    >>> logits = torch.zeros(1, 2, 1, 2)  # p = 1/2 for both classes
    >>> targets = torch.tensor([[[0, 1]]])
    >>> round(weighted_cross_entropy(logits, targets).item(), 4)  # log 2
    0.6931
    """
    weights = _check(logits, targets, weights)
    targets = _safe_targets(targets, weights, logits.shape[1])
    ce = F.cross_entropy(logits, targets, reduction="none")
    total = weights.sum()
    return (weights * ce).sum() / total.clamp_min(torch.finfo(total.dtype).tiny)


def soft_dice_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """Soft Dice loss on softmax probabilities, averaged over images and classes.

    Parameters
    ----------
    logits : (B, C, *spatial) torch.Tensor
        Raw network output.
    targets : (B, *spatial) torch.Tensor of int
        Class index per pixel.
    weights : (B, *spatial) torch.Tensor, optional
        Non-negative weight per pixel; 0 ignores a pixel. Default: 1.
    smooth : float, optional
        Added to numerator and denominator, so that a class absent from both
        target and prediction of an image scores a Dice of 1.

    Returns
    -------
    loss : scalar torch.Tensor
        ``1 - mean_{b, c} (2 sum(w p t) + smooth) / (sum(w p) + sum(w t) + smooth)``
        with sums over the pixels of image ``b``, ``p`` the softmax probability
        of class ``c`` and ``t`` the one-hot target. In ``[0, 1]``.

    See Also
    --------
    weighted_cross_entropy, hybrid_loss, SoftDiceLoss

    Notes
    -----
    Dice is computed per image and per class, then averaged (as in the
    U-Net++ hybrid loss [1]_), so each class counts equally however rare it is.
    The weights multiply every pixel's contribution: with a 0/1 mask this
    restricts Dice to the annotated pixels; with a border weight map it also
    emphasises the separating borders.

    References
    ----------
    .. [1] Z. Zhou, M. M. Rahman Siddiquee, N. Tajbakhsh, J. Liang, "UNet++:
           A Nested U-Net Architecture for Medical Image Segmentation",
           DLMIA 2018. :DOI:`10.1007/978-3-030-00889-5_1`

    Examples
    --------
    >>> logits = torch.tensor([[[[0.0, 0.0]], [[0.0, 0.0]]]])  # p = 1/2
    >>> targets = torch.tensor([[[0, 1]]])
    >>> round(soft_dice_loss(logits, targets, smooth=0.0).item(), 4)  # 1 - 1/2
    0.5
    """
    weights = _check(logits, targets, weights)
    classes = logits.shape[1]
    targets = _safe_targets(targets, weights, classes)
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(targets, classes).movedim(-1, 1).to(probs.dtype)
    w = weights.unsqueeze(1)
    axes = tuple(range(2, logits.ndim))
    intersection = (w * probs * onehot).sum(dim=axes)
    denominator = (w * probs).sum(dim=axes) + (w * onehot).sum(dim=axes)
    dice = (2 * intersection + smooth) / (denominator + smooth).clamp_min(
        torch.finfo(probs.dtype).tiny
    )
    return 1 - dice.mean()


def hybrid_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    ce_weight: float = 0.5,
    dice_weight: float = 1.0,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """The U-Net++ hybrid loss: cross-entropy plus soft Dice.

    Parameters
    ----------
    logits : (B, C, *spatial) torch.Tensor
        Raw network output.
    targets : (B, *spatial) torch.Tensor of int
        Class index per pixel.
    weights : (B, *spatial) torch.Tensor, optional
        Non-negative weight per pixel, used by both terms; 0 ignores a pixel.
    ce_weight, dice_weight : float, optional
        Factors of the two terms; U-Net++ [1]_ uses 1/2 and 1.
    smooth : float, optional
        See :func:`soft_dice_loss`.

    Returns
    -------
    loss : scalar torch.Tensor
        ``ce_weight * weighted_cross_entropy + dice_weight * soft_dice_loss``.

    Notes
    -----
    U-Net++ writes the Dice term as ``-dice``; ``1 - dice`` differs by a
    constant, so the gradients are the same and the loss stays non-negative.

    References
    ----------
    .. [1] Z. Zhou, M. M. Rahman Siddiquee, N. Tajbakhsh, J. Liang, "UNet++:
           A Nested U-Net Architecture for Medical Image Segmentation",
           DLMIA 2018. :DOI:`10.1007/978-3-030-00889-5_1`

    Examples
    --------
    >>> logits = torch.zeros(1, 2, 1, 2)
    >>> targets = torch.tensor([[[0, 1]]])
    >>> round(hybrid_loss(logits, targets, smooth=0.0).item(), 4)  # log(2) / 2 + 1/2
    0.8466
    """
    ce = weighted_cross_entropy(logits, targets, weights)
    dice = soft_dice_loss(logits, targets, weights, smooth=smooth)
    return ce_weight * ce + dice_weight * dice


class WeightedCrossEntropyLoss(nn.Module):
    """Module form of :func:`weighted_cross_entropy`.

    ``forward(logits, targets, weights=None)`` with logits ``(B, C, *spatial)``,
    targets and weights ``(B, *spatial)``; returns a scalar.
    """

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        return weighted_cross_entropy(logits, targets, weights)


class SoftDiceLoss(nn.Module):
    """Module form of :func:`soft_dice_loss`.

    Parameters
    ----------
    smooth : float
        See :func:`soft_dice_loss`.
    """

    def __init__(self, smooth: float = 1e-5) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        return soft_dice_loss(logits, targets, weights, smooth=self.smooth)


class HybridLoss(nn.Module):
    """Module form of :func:`hybrid_loss`.

    Parameters
    ----------
    ce_weight, dice_weight, smooth : float
        See :func:`hybrid_loss`.
    """

    def __init__(
        self, ce_weight: float = 0.5, dice_weight: float = 1.0, smooth: float = 1e-5
    ) -> None:
        super().__init__()
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.smooth = smooth

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        return hybrid_loss(
            logits,
            targets,
            weights,
            ce_weight=self.ce_weight,
            dice_weight=self.dice_weight,
            smooth=self.smooth,
        )
