"""Tests for napari_unet.losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from napari_unet.losses import (
    HybridLoss,
    SoftDiceLoss,
    WeightedCrossEntropyLoss,
    crop_to_output,
    hybrid_loss,
    soft_dice_loss,
    weighted_cross_entropy,
)


def _example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image, two classes, three pixels; the third pixel is ignored."""
    logits = torch.tensor([[[[2.0, 0.0, 7.0]], [[0.0, 1.0, -3.0]]]])  # (1, 2, 1, 3)
    targets = torch.tensor([[[0, 0, 1]]])
    weights = torch.tensor([[[1.0, 3.0, 0.0]]])
    return logits, targets, weights


def test_weighted_cross_entropy_by_hand():
    logits, targets, weights = _example()
    ce0 = math.log(1 + math.exp(-2.0))  # -log(e^2 / (e^2 + e^0))
    ce1 = math.log(1 + math.exp(1.0))  # -log(e^0 / (e^0 + e^1))
    expected = (1 * ce0 + 3 * ce1) / (1 + 3)
    loss = weighted_cross_entropy(logits, targets, weights)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_without_weights_is_the_plain_mean():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 6, generator=gen)
    targets = torch.randint(0, 3, (2, 5, 6), generator=gen)
    expected = F.cross_entropy(logits, targets)
    assert weighted_cross_entropy(logits, targets).item() == pytest.approx(expected.item())
    ones = torch.ones(2, 5, 6)
    assert weighted_cross_entropy(logits, targets, 4 * ones).item() == pytest.approx(
        expected.item()
    )


def test_ignored_pixels_do_not_count_and_may_hold_any_target():
    logits, targets, weights = _example()
    kept = weighted_cross_entropy(logits[..., :2], targets[..., :2], weights[..., :2])
    targets[..., 2] = 99  # out of range, but ignored
    assert weighted_cross_entropy(logits, targets, weights).item() == pytest.approx(kept.item())
    dice_kept = soft_dice_loss(logits[..., :2], targets[..., :2], weights[..., :2])
    assert soft_dice_loss(logits, targets, weights).item() == pytest.approx(dice_kept.item())


def test_all_ignored_gives_zero_and_finite_gradient():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    targets = torch.zeros(1, 4, 4, dtype=torch.long)
    loss = weighted_cross_entropy(logits, targets, torch.zeros(1, 4, 4))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad == 0).all()


def test_soft_dice_by_hand():
    # p(class 1) = 3/4 at both pixels: logits (0, ln 3)
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3.0), math.log(3.0)]]]])
    targets = torch.tensor([[[0, 1]]])
    # class 0: p = (1/4, 1/4), t = (1, 0): 2 * 1/4 / (1/2 + 1) = 1/3
    # class 1: p = (3/4, 3/4), t = (0, 1): 2 * 3/4 / (3/2 + 1) = 3/5
    expected = 1 - (1 / 3 + 3 / 5) / 2
    assert soft_dice_loss(logits, targets, smooth=0.0).item() == pytest.approx(expected)
    # weights (2, 1): class 0: 2 * 2/4 / (3/4 + 2) = 4/11; class 1: 2 * 3/4 / (9/4 + 1) = 6/13
    weights = torch.tensor([[[2.0, 1.0]]])
    expected = 1 - (4 / 11 + 6 / 13) / 2
    got = soft_dice_loss(logits, targets, weights, smooth=0.0)
    assert got.item() == pytest.approx(expected)


def test_soft_dice_is_per_image_then_averaged():
    logits = torch.tensor([[[[0.0]], [[math.log(3.0)]]], [[[0.0]], [[0.0]]]])  # (2, 2, 1, 1)
    targets = torch.tensor([[[1]], [[0]]])
    smooth = 1.0
    # image 0: class 0: (0 + 1) / (1/4 + 0 + 1) = 4/5; class 1: (3/2 + 1) / (3/4 + 1 + 1) = 10/11
    # image 1: class 0: (1 + 1) / (1/2 + 1 + 1) = 4/5; class 1: (0 + 1) / (1/2 + 0 + 1) = 2/3
    expected = 1 - (4 / 5 + 10 / 11 + 4 / 5 + 2 / 3) / 4
    assert soft_dice_loss(logits, targets, smooth=smooth).item() == pytest.approx(expected)


def test_perfect_prediction_has_zero_dice_loss():
    targets = torch.tensor([[[0, 1, 2], [2, 1, 0]]])
    logits = 50 * F.one_hot(targets, 3).movedim(-1, 1).float()
    assert soft_dice_loss(logits, targets).item() == pytest.approx(0.0, abs=1e-6)


def test_hybrid_by_hand():
    logits, targets, weights = _example()
    ce = weighted_cross_entropy(logits, targets, weights).item()
    dice = soft_dice_loss(logits, targets, weights).item()
    got = hybrid_loss(logits, targets, weights).item()
    assert got == pytest.approx(0.5 * ce + dice)
    custom = hybrid_loss(logits, targets, weights, ce_weight=2.0, dice_weight=0.0).item()
    assert custom == pytest.approx(2 * ce)
    zeros = torch.zeros(1, 2, 1, 2)
    plain = hybrid_loss(zeros, torch.tensor([[[0, 1]]]), smooth=0.0).item()
    assert plain == pytest.approx(0.5 * math.log(2) + 0.5)


def test_modules_match_functions_and_backpropagate_3d():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 5, 6, generator=gen, requires_grad=True)
    targets = torch.randint(0, 3, (2, 4, 5, 6), generator=gen)
    weights = torch.rand(2, 4, 5, 6, generator=gen)
    pairs = [
        (WeightedCrossEntropyLoss(), weighted_cross_entropy(logits, targets, weights)),
        (SoftDiceLoss(smooth=0.5), soft_dice_loss(logits, targets, weights, smooth=0.5)),
        (HybridLoss(ce_weight=1.0), hybrid_loss(logits, targets, weights, ce_weight=1.0)),
    ]
    for module, expected in pairs:
        loss = module(logits, targets, weights)
        assert loss.item() == pytest.approx(expected.item())
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_crop_to_output():
    x = torch.arange(2 * 6 * 8).reshape(2, 6, 8)
    cropped = crop_to_output(x, torch.zeros(2, 3, 2, 4))
    assert torch.equal(cropped, x[:, 2:4, 2:6])
    with pytest.raises(ValueError, match="`x`"):
        crop_to_output(x, torch.zeros(2, 6, 8))
    with pytest.raises(ValueError, match="larger"):
        crop_to_output(x, torch.zeros(2, 3, 8, 8))


@pytest.mark.parametrize("loss", [weighted_cross_entropy, soft_dice_loss, hybrid_loss])
def test_bad_input(loss):
    logits = torch.zeros(1, 2, 3, 3)
    targets = torch.zeros(1, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="`targets` \\(shape"):
        loss(logits, targets[:, :2])
    with pytest.raises(ValueError, match="integer class"):
        loss(logits, targets.float())
    with pytest.raises(ValueError, match="`weights` \\(shape"):
        loss(logits, targets, torch.ones(1, 3, 2))
    with pytest.raises(ValueError, match="must lie in"):
        loss(logits, targets + 2)
    with pytest.raises(ValueError, match="`logits`"):
        loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
