"""U-Net++: parameter count, shapes, pruning, ensemble, context, tiling, deep supervision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.deep_supervision import DeepSupervisionLoss, deep_supervision_loss, model_heads
from napari_unet.losses import hybrid_loss
from napari_unet.models import UNet, UNetPlusPlus
from napari_unet.tiling import predict_tiled


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tiny(seed: int = 0, **kwargs) -> UNetPlusPlus:
    torch.manual_seed(seed)
    kwargs = {"depth": 4, "base_channels": 4, **kwargs}
    return UNetPlusPlus(**kwargs).eval()


# -- architecture ---------------------------------------------------------------------------------


def test_parameter_count_matches_the_papers_9_04_million():
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        net = UNetPlusPlus(in_channels=1, num_classes=1, depth=4, base_channels=32)
        single = UNetPlusPlus(num_classes=1, deep_supervision=False)
    count = n_params(net)
    assert abs(count - 9.04e6) / 9.04e6 < 0.02
    # Exactly: 15 nodes, 10 transposed 2x2 convolutions, 4 heads of 33 parameters.
    assert count == 9_041_700
    assert len(net.nodes) == 15 and len(net.up) == 10 and len(net.heads) == 4
    assert n_params(single) == count - 3 * 33


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_shapes_for_every_depth(depth):
    net = tiny(depth=depth, in_channels=2, num_classes=3)
    d = 2**depth
    assert net.divisor == d and net.halo == (0, 0) and net.padding == "same"
    shape = (3 * d, 5 * d)  # non-square, odd multiples
    x = torch.randn(2, 2, *shape)
    with torch.no_grad():
        out = net(x)
        heads = net.forward_heads(x)
    assert out.shape == (2, 3, *shape)
    assert len(heads) == depth
    assert all(h.shape == (2, 3, *shape) for h in heads)
    assert net.output_shape(shape) == shape
    assert net.is_valid_input_shape(shape)
    assert not net.is_valid_input_shape((3 * d + 1, 5 * d)) or d == 1
    assert net.valid_input_shape((d + 1, 1)) == (2 * d, d)


def test_three_dimensional_volumes():
    net = tiny(depth=2, spatial_dims=3, num_classes=2)
    with torch.no_grad():
        out = net(torch.randn(1, 1, 8, 12, 4))
    assert out.shape == (1, 2, 8, 12, 4)
    assert net.halo == (0, 0, 0)


def test_invalid_input_shapes_raise_naming_the_nearest_valid_shape():
    net = tiny(depth=3)
    with pytest.raises(ValueError, match=r"multiple of 8.*\(16, 24\)"):
        net(torch.randn(1, 1, 12, 20))
    with pytest.raises(ValueError, match="expected"):
        net(torch.randn(1, 2, 16, 16))  # wrong channel count
    with pytest.raises(ValueError, match=r"nearest valid input shape is \(16, 24\)"):
        net.output_shape((12, 20))
    with pytest.raises(ValueError, match="`input_shape` must have 2 spatial axes"):
        net.is_valid_input_shape((16, 16, 16))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 0}, "`depth`"),
        ({"base_channels": 0}, "`base_channels`"),
        ({"num_classes": 1.5}, "`num_classes`"),
        ({"in_channels": True}, "`in_channels`"),
        ({"dropout": 1.0}, "`dropout`"),
        ({"spatial_dims": 1}, "`spatial_dims`"),
        ({"output_level": 0}, "`output_level`"),
        ({"output_level": 5}, "`output_level`"),
        ({"output_level": "L2"}, "`output_level`"),
        ({"output_level": 2, "deep_supervision": False}, "`output_level`"),
    ],
)
def test_bad_constructor_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNetPlusPlus(**{"base_channels": 2, **kwargs})


def test_bad_prune_levels_raise_value_error():
    net = tiny(depth=3)
    for level in (0, 4, 1.0):
        with pytest.raises(ValueError, match="`level`"):
            net.prune(level)
    with pytest.raises(ValueError, match=r"`level`.*deep_supervision"):
        tiny(depth=3, deep_supervision=False).prune(2)
    with pytest.raises(ValueError, match="`output_level`"):
        net.output_level = 7


def test_config_rebuilds_the_same_network_and_mode():
    net = tiny(depth=3, num_classes=3, batch_norm=True, dropout=0.1, output_level=2)
    clone = UNetPlusPlus(**net.config()).eval()
    clone.load_state_dict(net.state_dict())
    assert clone.config() == net.config()
    assert clone.mode == "L2"
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), net(x))


def test_he_initialisation():
    torch.manual_seed(0)
    net = UNetPlusPlus(base_channels=16)
    conv = net.nodes["x0_3"][0]  # first 3x3 convolution of X^{0,3}: 4 * 16 inputs
    fan_in = conv.in_channels * 9
    assert abs(conv.weight.std().item() - (2 / fan_in) ** 0.5) < 0.05 * (2 / fan_in) ** 0.5
    assert torch.all(conv.bias == 0)


# -- output modes: ensemble and pruning -----------------------------------------------------------


def test_ensemble_softmax_is_the_mean_of_the_heads_probabilities():
    net = tiny(num_classes=3)
    assert net.mode == "ensemble"
    x = torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        ensemble = net(x)
        heads = net.forward_heads(x)
    mean = torch.stack([h.softmax(1) for h in heads]).mean(0)
    torch.testing.assert_close(ensemble.softmax(1), mean, atol=1e-6, rtol=0)
    # The outputs are log-probabilities: their softmax needs no renormalisation.
    torch.testing.assert_close(ensemble.exp().sum(1), torch.ones(2, 32, 48), atol=1e-5, rtol=0)
    # ... and different from averaging logits (a geometric mean).
    averaged_logits = torch.stack(heads).mean(0).softmax(1)
    assert (averaged_logits - mean).abs().max() > 1e-3


def _count_calls(net: UNetPlusPlus) -> dict[str, int]:
    calls: dict[str, int] = {}
    for group in ("nodes", "up", "heads"):
        for name, module in getattr(net, group).items():
            key = f"{group}.{name}"
            calls[key] = 0

            def hook(_module, _inputs, _output, key=key):
                calls[key] += 1

            module.register_forward_hook(hook)
    return calls


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_pruned_level_computes_only_its_nodes_and_equals_that_head(level):
    net = tiny(seed=level)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        heads = net.forward_heads(x)
    calls = _count_calls(net)
    net.output_level = level
    with torch.no_grad():
        pruned_out = net(x)
    torch.testing.assert_close(pruned_out, heads[level - 1], atol=1e-5, rtol=0)
    needed = {f"nodes.x{i}_{j}" for i in range(level + 1) for j in range(level + 1 - i)}
    needed |= {f"up.x{i}_{j}" for i in range(level) for j in range(1, level + 1 - i)}
    needed |= {f"heads.{level}"}
    assert {k for k, v in calls.items() if v} == needed
    assert all(v == 1 for k, v in calls.items() if k in needed)
    assert len([k for k in needed if k.startswith("nodes.")]) == (level + 1) * (level + 2) // 2

    # prune() returns a lighter model holding only those weights, same output.
    small = net.prune(level)
    assert small.depth == level and small.output_level == level and not small.training
    assert set(small.state_dict()) <= set(net.state_dict())
    assert n_params(small) < n_params(net) or level == net.depth
    with torch.no_grad():
        torch.testing.assert_close(small(x), heads[level - 1], atol=1e-5, rtol=0)
    # A pruned model is trained along with the full one but owns its weights.
    next(small.parameters()).data.add_(1.0)
    assert not torch.equal(next(small.parameters()), next(net.parameters()))


def test_pruned_parameter_counts_at_paper_width():
    with torch.device("meta"):
        net = UNetPlusPlus(num_classes=1)
        counts = [n_params(net.prune(level)) for level in (1, 2, 3, 4)]
    # L4 is the whole network; every level is far lighter than the next.
    assert counts[3] == n_params(net)
    assert counts[0] < counts[1] < counts[2] < counts[3]
    assert counts[2] < 0.3 * counts[3]


def test_without_deep_supervision_the_only_output_is_the_last_node():
    net = tiny(depth=3, deep_supervision=False)
    assert net.mode == "L3" and list(net.heads) == ["3"]
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        (head,) = net.forward_heads(x)
        torch.testing.assert_close(net(x), head)


# -- context and tiling ---------------------------------------------------------------------------


@pytest.mark.parametrize("level", [1, 2, 3, None])
def test_context_is_exactly_the_reach_of_a_tile_edge(level):
    """Crop an image, compare to the full pass: differences reach exactly `context` pixels."""
    net = tiny(seed=3, output_level=level)
    assert net.context == {1: 8, 2: 22, 3: 46, None: 94}[level]
    if level is not None:
        assert net.context == UNet(depth=level, padding="same").context
    size, offset, crop = 320, 64, 192
    x = torch.randn(1, 1, size, size)
    with torch.no_grad():
        full = net(x)[0, :, offset : offset + crop, offset : offset + crop]
        cropped = net(x[..., offset : offset + crop, offset : offset + crop])[0]
    changed = ((full - cropped).abs().amax(0) > 1e-4).numpy()
    ys, xs = np.nonzero(changed)
    distance = np.minimum(np.minimum(ys, crop - 1 - ys), np.minimum(xs, crop - 1 - xs))
    reach = distance.max() + 1
    # Never beyond `context` (tiling would not be exact), and nearly tight:
    # whether the very last pixel changes depends on the weights (ReLUs).
    assert net.context - 2 <= reach <= net.context


@pytest.mark.parametrize("mode", ["ensemble", "L2", "prune(3)"])
def test_tiled_prediction_equals_the_whole_image_pass(mode):
    net = tiny(seed=4, num_classes=3)
    if mode == "L2":
        net.output_level = 2
    elif mode == "prune(3)":
        net = net.prune(3)
    rng = np.random.default_rng(4)
    image = rng.normal(size=(110, 130)).astype(np.float32)
    whole = predict_tiled(net, image, tile_shape=(512, 512), device="cpu")  # one tile
    # Small tiles: the default overlap (2 * context + 1 rounded up) plus 128,
    # so that the tiles are blended inside the image (at least 2 x 2 tiles).
    overlap = -(-(2 * net.context + 1) // net.divisor) * net.divisor
    tile = (overlap + 128, overlap + 128)
    tiled = predict_tiled(net, image, tile_shape=tile, device="cpu")
    assert tiled.shape == (3, 110, 130)
    # Exact over the whole image, borders included (both mirror-pad alike).
    np.testing.assert_allclose(tiled, whole, atol=1e-4, rtol=0)


# -- deep supervision -----------------------------------------------------------------------------


def test_deep_supervision_loss_is_the_mean_hybrid_loss_over_heads():
    torch.manual_seed(0)
    heads = [torch.randn(2, 3, 8, 8) for _ in range(4)]
    targets = torch.randint(0, 3, (2, 8, 8))
    weights = torch.rand(2, 8, 8)
    expected = torch.stack([hybrid_loss(h, targets, weights) for h in heads]).mean()
    torch.testing.assert_close(deep_supervision_loss(heads, targets, weights), expected)
    # Relative head weights are normalised; zero weight drops a head.
    weighted = deep_supervision_loss(heads, targets, weights, head_weights=[0, 0, 0, 2])
    torch.testing.assert_close(weighted, hybrid_loss(heads[3], targets, weights))
    module = DeepSupervisionLoss(ce_weight=1.0, dice_weight=0.0)
    torch.testing.assert_close(
        module(heads[0], targets), hybrid_loss(heads[0], targets, ce_weight=1.0, dice_weight=0.0)
    )


def test_deep_supervision_loss_crops_targets_for_valid_padding_models():
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 4, 4)
    targets = torch.randint(0, 2, (1, 8, 8))
    weights = torch.rand(1, 8, 8)
    expected = hybrid_loss(logits, targets[:, 2:6, 2:6], weights[:, 2:6, 2:6])
    torch.testing.assert_close(deep_supervision_loss(logits, targets, weights), expected)


def test_ignored_pixels_do_not_contribute():
    net = tiny(seed=5, depth=2)
    net.train()
    x = torch.randn(2, 1, 16, 16)
    targets = torch.randint(0, 2, (2, 16, 16))
    weights = torch.ones(2, 16, 16)
    weights[:, :, 8:] = 0  # right half not annotated
    heads = net.forward_heads(x)
    for head in heads:
        head.retain_grad()
    loss = deep_supervision_loss(heads, targets, weights)
    loss.backward()
    # No gradient reaches the logits of ignored pixels, in any head ...
    for head in heads:
        assert torch.all(head.grad[..., 8:] == 0)
        assert head.grad[..., :8].abs().sum() > 0
    # ... and their target values (even invalid ones) do not matter.
    other = targets.clone()
    other[:, :, 8:] = 7
    with torch.no_grad():
        torch.testing.assert_close(deep_supervision_loss(heads, other, weights), loss.detach())


def test_deep_supervision_trains_every_head_on_a_tiny_overfit_problem():
    torch.manual_seed(0)
    net = UNetPlusPlus(depth=2, base_channels=4, batch_norm=True)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    targets = (((yy - 16) ** 2 + (xx - 12) ** 2) < 64).long()[None]  # a disc
    image = targets.float()[None] + 0.3 * torch.randn(1, 1, 32, 32)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)

    def head_losses() -> list[float]:
        with torch.no_grad():
            return [float(hybrid_loss(h, targets)) for h in net.forward_heads(image)]

    before = head_losses()
    for _ in range(40):
        loss = deep_supervision_loss(model_heads(net, image), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = head_losses()
    assert all(a < 0.5 * b for a, b in zip(after, before, strict=True)), (before, after)
    net.eval()
    for level in (1, 2):
        net.output_level = level
        with torch.no_grad():
            pred = net(image).argmax(1)
        assert (pred == targets).float().mean() > 0.95


def test_model_heads_works_for_a_plain_unet():
    net = UNet(depth=1, base_channels=2, padding="same").eval()
    x = torch.randn(1, 1, 8, 8)
    (only,) = model_heads(net, x)
    torch.testing.assert_close(only, net(x))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda h, t: deep_supervision_loss([], t), "`heads`"),
        (lambda h, t: deep_supervision_loss([h, h[:, :, :4]], t), r"`heads\[1\]`"),
        (lambda h, t: deep_supervision_loss([h, "x"], t), r"`heads\[1\]`"),
        (lambda h, t: deep_supervision_loss([h, h], t, head_weights=[1]), "`head_weights`"),
        (lambda h, t: deep_supervision_loss([h, h], t, head_weights=[1, -1]), "`head_weights`"),
        (lambda h, t: deep_supervision_loss([h], t[:, :4, :4]), "`targets`"),
        (lambda h, t: deep_supervision_loss([h], t, torch.ones(1, 3, 3)), "`weights`"),
    ],
)
def test_bad_loss_arguments_raise_value_error(call, match):
    heads = torch.zeros(1, 2, 8, 8)
    targets = torch.zeros(1, 8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match=match):
        call(heads, targets)
