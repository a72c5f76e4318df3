"""The U-Net: the paper's layer count, parameters and shapes, and the shape helpers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from napari_unet.models import UNet, center_crop


def _convs(net: nn.Module) -> list[nn.Module]:
    kinds = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    return [m for m in net.modules() if isinstance(m, kinds)]


def test_paper_network_has_23_conv_layers_and_31_03_million_parameters():
    net = UNet()
    assert len(_convs(net)) == 23
    params = sum(p.numel() for p in net.parameters())
    assert round(params / 1e6, 2) == 31.03
    assert params == 31_030_658


def test_paper_tile_572_gives_388_and_forward_pass_agrees():
    net = UNet()
    assert net.output_shape((572, 572)) == (388, 388)
    assert net.halo == (92, 92)
    assert net.valid_input_shape((388, 388)) == (572, 572)
    # A narrow copy of the same architecture runs the real forward pass quickly.
    small = UNet(base_channels=2).eval()
    with torch.inference_mode():
        y = small(torch.zeros(1, 1, 572, 572))
    assert y.shape == (1, 2, 388, 388)


def test_he_normal_initialisation_std_matches_fan_in():
    torch.manual_seed(0)
    net = UNet(base_channels=16)
    for conv in _convs(net):
        w = conv.weight
        if isinstance(conv, nn.ConvTranspose2d):
            fan_in = conv.in_channels  # one tap per input channel reaches an output pixel
        else:
            fan_in = conv.in_channels * math.prod(conv.kernel_size)
        expected = math.sqrt(2.0 / fan_in)
        if w.numel() > 2000:  # enough samples for the estimate to be tight
            assert w.std().item() == pytest.approx(expected, rel=0.1)
        assert torch.all(conv.bias == 0)


def test_dropout_sits_at_the_end_of_the_contracting_path_only():
    net = UNet(depth=3, base_channels=4, dropout=0.5)
    dropouts = [name for name, m in net.named_modules() if isinstance(m, nn.Dropout)]
    assert dropouts == ["down.2.2"]
    assert not any(isinstance(m, nn.Dropout) for m in UNet(dropout=0.0).modules())


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("wanted", [1, 7, 50, 101])
def test_valid_input_shape_is_smallest_valid_and_covers_wanted_output(depth, wanted):
    net = UNet(depth=depth, base_channels=1)
    n = net.valid_input_shape((wanted, wanted))[0]
    assert net.is_valid_input_shape((n, n))
    assert net.output_shape((n, n))[0] >= wanted
    smaller = [m for m in range(1, n) if net.is_valid_input_shape((m, m))]
    assert all(net.output_shape((m, m))[0] < wanted for m in smaller)


@pytest.mark.parametrize(
    ("padding", "depth", "shape"),
    [
        ("valid", 1, (20, 36)),
        ("valid", 2, (44, 60)),
        ("valid", 3, (92, 108)),
        ("same", 2, (16, 24)),
        ("same", 3, (40, 8)),
    ],
)
def test_forward_shape_matches_output_shape_helper(padding, depth, shape):
    net = UNet(depth=depth, base_channels=2, padding=padding, in_channels=3, num_classes=4)
    net.eval()
    with torch.inference_mode():
        y = net(torch.randn(2, 3, *shape))
    assert y.shape == (2, 4, *net.output_shape(shape))
    if padding == "same":
        assert y.shape[2:] == shape
        assert net.halo == (0, 0)


def test_3d_variant_shapes():
    net = UNet(depth=1, base_channels=2, spatial_dims=3).eval()
    shape = net.valid_input_shape((4, 6, 8))
    with torch.inference_mode():
        y = net(torch.randn(1, 1, *shape))
    assert y.shape[2:] == net.output_shape(shape)
    assert all(o >= w for o, w in zip(y.shape[2:], (4, 6, 8), strict=True))


def test_invalid_input_shape_names_the_nearest_valid_one():
    net = UNet(depth=2, base_channels=2)
    with pytest.raises(
        ValueError, match=r"not valid .* nearest valid input shape is \(\d+, \d+\)"
    ):
        net.output_shape((45, 45))
    with pytest.raises(ValueError, match=r"input has shape \(1, 1, 45, 45\)"):
        net(torch.zeros(1, 1, 45, 45))


def test_wrong_channels_raise_with_expected_shape():
    net = UNet(depth=1, base_channels=2, in_channels=2)
    with pytest.raises(ValueError, match=r"expected \(batch, 2, N, N\)"):
        net(torch.zeros(1, 3, 20, 20))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"padding": "reflect"}, "`padding`"),
        ({"depth": 0}, "`depth`"),
        ({"in_channels": 0}, "`in_channels`"),
        ({"dropout": 1.0}, "`dropout`"),
        ({"spatial_dims": 1}, "`spatial_dims`"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)


def test_config_rebuilds_the_same_architecture():
    net = UNet(depth=2, base_channels=3, padding="same", batch_norm=True, num_classes=3)
    clone = UNet(**net.config())
    assert [p.shape for p in clone.parameters()] == [p.shape for p in net.parameters()]


def test_center_crop_is_symmetric():
    x = torch.arange(2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    y = center_crop(x, (4, 6))
    assert y.shape == (2, 3, 4, 6)
    assert torch.equal(y, x[:, :, 2:6, 1:7])
    with pytest.raises(ValueError, match="larger"):
        center_crop(x, (10, 4))
