"""Building blocks shared by the U-Net and U-Net++.

Every block takes ``spatial_dims`` (2 or 3) first, then input and output
channels, following MONAI's ``basic_unet`` convention.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ConvBlock", "Down", "UpConv", "center_crop", "he_normal_"]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _check_spatial_dims(spatial_dims: int) -> None:
    if spatial_dims not in _CONV:
        raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims}")


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by (optional batch norm and) ReLU.

    Parameters
    ----------
    spatial_dims : int
        2 for images, 3 for volumes.
    in_channels, out_channels : int
        Channels in and out.
    padding : {"valid", "same"}
        ``"valid"`` (the paper) loses one pixel per side per convolution;
        ``"same"`` zero-pads so the spatial size is kept.
    batch_norm : bool
        Insert batch normalisation after each convolution (the convolution
        then has no bias, which batch norm would cancel).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        padding: str = "valid",
        batch_norm: bool = False,
    ) -> None:
        _check_spatial_dims(spatial_dims)
        pad = 1 if padding == "same" else 0
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(2):
            layers.append(
                _CONV[spatial_dims](channels, out_channels, 3, padding=pad, bias=not batch_norm)
            )
            if batch_norm:
                layers.append(_NORM[spatial_dims](out_channels))
            layers.append(nn.ReLU(inplace=True))
            channels = out_channels
        super().__init__(*layers)


class Down(nn.Sequential):
    """2x2 max pooling with stride 2, then a :class:`ConvBlock`.

    ``pool`` gives the pooling window per axis (e.g. ``(1, 2, 2)``: in-plane
    only, for volumes whose planes are farther apart than their pixels).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        padding: str = "valid",
        batch_norm: bool = False,
        dropout: float = 0.0,
        pool: int | tuple[int, ...] = 2,
    ) -> None:
        _check_spatial_dims(spatial_dims)
        layers: list[nn.Module] = [
            _POOL[spatial_dims](pool, stride=pool),
            ConvBlock(
                spatial_dims, in_channels, out_channels, padding=padding, batch_norm=batch_norm
            ),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class UpConv(nn.Sequential):
    """The paper's "up-convolution": a 2x2 transposed convolution, stride 2.

    ``scale`` gives its kernel and stride per axis, matching the pooling of
    the level below (``(1, 2, 2)`` upsamples in-plane only).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        scale: int | tuple[int, ...] = 2,
    ) -> None:
        _check_spatial_dims(spatial_dims)
        super().__init__(_CONV_T[spatial_dims](in_channels, out_channels, scale, stride=scale))


def center_crop(x: torch.Tensor, spatial_shape: tuple[int, ...]) -> torch.Tensor:
    """Crop the trailing spatial axes of ``x`` symmetrically to ``spatial_shape``.

    This is the "crop" of the paper's crop-and-concat: with valid convolutions
    the contracting path's feature maps are larger than the upsampled ones.
    """
    slices = [slice(None), slice(None)]
    for have, want in zip(x.shape[2:], spatial_shape, strict=True):
        if want > have:
            raise ValueError(f"cannot crop size {have} to the larger size {want}")
        start = (have - want) // 2
        slices.append(slice(start, start + want))
    return x[tuple(slices)]


def he_normal_(module: nn.Module) -> None:
    """He-normal initialisation as in the U-Net paper, section 3.

    Weights are drawn from a Gaussian with standard deviation sqrt(2 / N),
    N being the number of incoming nodes of one neuron. For a k x k convolution
    that is ``in_channels * k * k``. For the 2x2, stride-2 up-convolution each
    output pixel is reached by exactly one kernel tap per input channel, so
    N = ``in_channels`` (PyTorch's ``kaiming_normal_`` would use the output
    channels there). Biases start at zero; batch norm at identity.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            fan_in = m.in_channels * math.prod(m.kernel_size)
        elif isinstance(m, (nn.ConvTranspose2d, nn.ConvTranspose3d)):
            fan_in = m.in_channels * math.prod(m.kernel_size) // math.prod(m.stride)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            continue
        else:
            continue
        nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / fan_in))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
