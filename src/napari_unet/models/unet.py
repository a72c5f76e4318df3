"""The U-Net of Ronneberger, Fischer and Brox (2015)."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import _CONV, ConvBlock, Down, UpConv, _check_spatial_dims, center_crop, he_normal_
from .shapes import ShapeHelpers

__all__ = ["UNet"]

_PADDINGS = ("valid", "same")


class UNet(ShapeHelpers, nn.Module):
    """U-Net: a contracting and an expanding path joined by crop-and-concat skips.

    With the default arguments this is the network of the paper [1]_: repeated
    unpadded 3x3 convolutions with ReLU, 2x2 max pooling with stride 2 that
    doubles the channels, 2x2 up-convolutions that halve them, concatenation
    with the centre-cropped feature map of the contracting path, and a final
    1x1 convolution to ``num_classes`` maps. It has 23 convolutional layers and
    31.03 M parameters for one input channel and two classes; a 572x572 input
    gives a 388x388 output. Weights are He-normal initialised, and dropout sits
    at the end of the contracting path (the bottleneck).

    Parameters
    ----------
    in_channels : int
        Image channels (fluorescence channels, modalities, RGB, ...).
    num_classes : int
        Output maps (background, cell, separating border, ...).
    depth : int
        Number of 2x2 poolings; the paper uses 4 (five resolution levels).
    base_channels : int
        Channels of the first level; level ``l`` has ``base_channels * 2**l``.
    padding : {"valid", "same"}
        ``"valid"`` (the paper): unpadded convolutions, the output is smaller
        than the input by :attr:`halo` pixels per side, and inputs must have a
        valid size (:meth:`valid_input_shape`). ``"same"``: zero-padded
        convolutions, output size equals input size, which must be divisible
        by ``2**depth``.
    batch_norm : bool
        Batch normalisation after every 3x3 convolution (not in the paper).
    dropout : float
        Dropout probability at the end of the contracting path.
    spatial_dims : int
        2 for images (the paper), 3 for volumes.

    References
    ----------
    .. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks
           for Biomedical Image Segmentation", MICCAI 2015.
           :DOI:`10.1007/978-3-319-24574-4_28`

    Examples
    --------
    >>> net = UNet()
    >>> net.output_shape((572, 572))
    (388, 388)
    >>> net.halo
    (92, 92)
    >>> net.valid_input_shape((100, 100))
    (284, 284)
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        depth: int = 4,
        base_channels: int = 64,
        padding: str = "valid",
        batch_norm: bool = False,
        dropout: float = 0.5,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        _check_spatial_dims(spatial_dims)
        for name, value, low in (
            ("in_channels", in_channels, 1),
            ("num_classes", num_classes, 1),
            ("depth", depth, 1),
            ("base_channels", base_channels, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}")
        if padding not in _PADDINGS:
            raise ValueError(f"`padding` must be one of {_PADDINGS}, got {padding!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout}")

        self.in_channels = in_channels
        self.num_classes = num_classes
        self.depth = depth
        self.base_channels = base_channels
        self.padding = padding
        self.batch_norm = batch_norm
        self.dropout = dropout
        self.spatial_dims = spatial_dims

        channels = [base_channels * 2**level for level in range(depth + 1)]
        kwargs = {"padding": padding, "batch_norm": batch_norm}
        self.inc = ConvBlock(spatial_dims, in_channels, channels[0], **kwargs)
        self.down = nn.ModuleList(
            Down(
                spatial_dims,
                channels[level],
                channels[level + 1],
                dropout=dropout if level == depth - 1 else 0.0,
                **kwargs,
            )
            for level in range(depth)
        )
        self.up = nn.ModuleList(
            UpConv(spatial_dims, channels[level + 1], channels[level])
            for level in reversed(range(depth))
        )
        self.dec = nn.ModuleList(
            ConvBlock(spatial_dims, 2 * channels[level], channels[level], **kwargs)
            for level in reversed(range(depth))
        )
        self.head = _CONV[spatial_dims](channels[0], num_classes, 1)
        he_normal_(self)

    def config(self) -> dict:
        """The constructor arguments, enough to rebuild this architecture."""
        return {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "depth": self.depth,
            "base_channels": self.base_channels,
            "padding": self.padding,
            "batch_norm": self.batch_norm,
            "dropout": self.dropout,
            "spatial_dims": self.spatial_dims,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw class scores (logits).

        Parameters
        ----------
        x : torch.Tensor
            Shape (batch, in_channels, *spatial), with a spatial shape for
            which :meth:`is_valid_input_shape` is true.

        Returns
        -------
        logits : torch.Tensor
            Shape (batch, num_classes, *:meth:`output_shape` (spatial)).
        """
        self._check_input(x)
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up, dec in zip(self.up, self.dec, strict=True):
            y = up(y)
            y = dec(torch.cat([center_crop(skips.pop(), y.shape[2:]), y], dim=1))
        return self.head(y)

    # -- shape helpers: see ShapeHelpers; valid padding has its own size rule --------------------

    @property
    def _size_rule(self) -> str:
        if self.padding == "same":
            return super()._size_rule
        return "every 2x2 pooling needs an even size and the output must be non-empty"

    @property
    def context(self) -> int:
        """Pixels per side over which a tile's edge can change its output.

        For ``"valid"`` padding this is the halo (92 at depth 4). For
        ``"same"`` padding it is how far the zero padding at a tile's edge
        reaches into the output: each 3x3 convolution spreads it by one pixel
        of its level, a 2x2 pooling halves it (rounding up) and an
        up-convolution doubles it; followed down and up the network this gives
        94 pixels at depth 4. Tiles that overlap by more than twice this are
        exact (see :func:`napari_unet.tiling.predict_tiled`).
        """
        if self.padding == "valid":
            return self.halo[0]
        reach, skips = 0, []
        for _ in range(self.depth):
            reach += 2
            skips.append(reach)
            reach = -(-reach // 2)
        reach += 2
        for skip in reversed(skips):
            reach = max(2 * reach, skip) + 2
        return reach

    def _output_size(self, n: int) -> int | None:
        """Output size along one axis, or None if ``n`` is not a valid input size."""
        if self.padding == "same":
            return super()._output_size(n)
        for _ in range(self.depth):
            n -= 4  # two unpadded 3x3 convolutions
            if n <= 0 or n % 2:
                return None
            n //= 2
        n -= 4
        if n <= 0:
            return None
        for _ in range(self.depth):
            n = 2 * n - 4
        return n

    def _input_size(self, out: int) -> int:
        if self.padding == "same":
            return super()._input_size(out)
        # Valid sizes form an arithmetic progression with step 2**depth (one
        # more pixel at the bottleneck); output grows by the same step.
        n = self.divisor
        while self._output_size(n) is None:
            n += 1
        o0 = self._output_size(n)
        steps = max(0, -(-(out - o0) // self.divisor))
        return n + steps * self.divisor
