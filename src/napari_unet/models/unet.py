"""The U-Net of Ronneberger, Fischer and Brox (2015)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import _CONV, ConvBlock, Down, UpConv, _check_spatial_dims, center_crop, he_normal_
from .shapes import ShapeHelpers, pool_kernels_for_spacing

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
        2 for images (the paper), 3 for volumes (the 3D U-Net of Çiçek et
        al. [2]_: the same network with 3x3x3 convolutions and 2x2x2 pooling).
    spacing : sequence of float, optional
        Voxel size per spatial axis, e.g. ``(2.0, 1.0, 1.0)`` for planes twice
        as far apart as pixels. Anisotropic volumes are pooled only along the
        axes whose voxel size is less than twice the finest one, level by
        level, until the voxels are about isotropic (nnU-Net's rule, see
        :func:`~napari_unet.models.shapes.pool_kernels_for_spacing`); the
        up-convolutions mirror this. Stored in the model file. Default:
        isotropic (pool every axis at every level).

    References
    ----------
    .. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks
           for Biomedical Image Segmentation", MICCAI 2015.
           :DOI:`10.1007/978-3-319-24574-4_28`
    .. [2] Ö. Çiçek, A. Abdulkadir, S. S. Lienkamp, T. Brox, O. Ronneberger,
           "3D U-Net: Learning Dense Volumetric Segmentation from Sparse
           Annotation", MICCAI 2016. :DOI:`10.1007/978-3-319-46723-8_49`

    Examples
    --------
    >>> net = UNet()
    >>> net.output_shape((572, 572))
    (388, 388)
    >>> net.halo
    (92, 92)
    >>> net.valid_input_shape((100, 100))
    (284, 284)
    >>> vol = UNet(depth=2, base_channels=4, spatial_dims=3, spacing=(2.0, 1.0, 1.0))
    >>> vol.pool_kernels, vol.halo
    (((1, 2, 2), (2, 2, 2)), (12, 20, 20))
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
        spacing: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        _check_spatial_dims(spatial_dims)
        if spacing is not None:
            spacing = tuple(float(v) for v in spacing)
            if len(spacing) != spatial_dims:
                raise ValueError(
                    f"`spacing` must have one voxel size per spatial axis ({spatial_dims}), "
                    f"got {spacing}"
                )
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
        self.spacing = spacing
        if spacing is not None:
            self._pool_kernels = pool_kernels_for_spacing(spacing, depth)
        kernels = self.pool_kernels

        channels = [base_channels * 2**level for level in range(depth + 1)]
        kwargs = {"padding": padding, "batch_norm": batch_norm}
        self.inc = ConvBlock(spatial_dims, in_channels, channels[0], **kwargs)
        self.down = nn.ModuleList(
            Down(
                spatial_dims,
                channels[level],
                channels[level + 1],
                dropout=dropout if level == depth - 1 else 0.0,
                pool=kernels[level],
                **kwargs,
            )
            for level in range(depth)
        )
        self.up = nn.ModuleList(
            UpConv(spatial_dims, channels[level + 1], channels[level], scale=kernels[level])
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
        config = {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "depth": self.depth,
            "base_channels": self.base_channels,
            "padding": self.padding,
            "batch_norm": self.batch_norm,
            "dropout": self.dropout,
            "spatial_dims": self.spatial_dims,
        }
        if self.spacing is not None:  # 2D and isotropic model files stay as they were
            config["spacing"] = list(self.spacing)
        return config

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
        exact (see :func:`napari_unet.tiling.predict_tiled`). The largest of
        :attr:`contexts`.
        """
        return max(self.contexts)

    @property
    def contexts(self) -> tuple[int, ...]:
        """:attr:`context` per axis (an axis pooled fewer times has less)."""
        if self.padding == "valid":
            return tuple(self.halo)
        return tuple(self._reach(axis) for axis in range(self.spatial_dims))

    def _reach(self, axis: int) -> int:
        factors = [k[axis] for k in self.pool_kernels]
        reach, skips = 0, []
        for f in factors:
            reach += 2
            skips.append(reach)
            reach = -(-reach // f)
        reach += 2
        for f, skip in zip(reversed(factors), reversed(skips), strict=True):
            reach = max(f * reach, skip) + 2
        return reach

    def _output_size(self, n: int, axis: int = 0) -> int | None:
        """Output size along one axis, or None if ``n`` is not a valid input size."""
        if self.padding == "same":
            return super()._output_size(n, axis)
        factors = [k[axis] for k in self.pool_kernels]
        for f in factors:
            n -= 4  # two unpadded 3x3 convolutions
            if n <= 0 or n % f:
                return None
            n //= f
        n -= 4
        for f in reversed(factors):
            if n <= 0:
                return None
            n = f * n - 4
        return n if n > 0 else None

    def _input_size(self, out: int, axis: int = 0) -> int:
        if self.padding == "same":
            return super()._input_size(out, axis)
        # Valid sizes form an arithmetic progression with step `divisor` (one
        # more pixel at the bottleneck); output grows by the same step.
        step = self.divisors[axis]
        n = step
        while self._output_size(n, axis) is None:
            n += 1
        o0 = self._output_size(n, axis)
        steps = max(0, -(-(out - o0) // step))
        return n + steps * step
