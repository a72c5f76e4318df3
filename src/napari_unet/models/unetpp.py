"""U-Net++: nested, dense skip pathways, deep supervision and pruning.

Zhou, Rahman Siddiquee, Tajbakhsh and Liang (DLMIA 2018; IEEE TMI 2019).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .blocks import _CONV, ConvBlock, Down, UpConv, _check_spatial_dims, he_normal_
from .shapes import ShapeHelpers

__all__ = ["UNetPlusPlus"]


def _key(i: int, j: int) -> str:
    """Module name of node X^{i,j} (and of the up-convolution feeding it)."""
    return f"x{i}_{j}"


class UNetPlusPlus(ShapeHelpers, nn.Module):
    """U-Net++: an encoder and nested decoders joined by dense skip pathways.

    Node ``X^{i,j}`` sits at resolution level ``i`` (``i`` 2x2 poolings below
    the input) and column ``j``. Column 0 is the encoder: ``X^{0,0}`` is two
    3x3 convolutions on the input and ``X^{i,0}`` a 2x2 max pooling of
    ``X^{i-1,0}`` followed by two 3x3 convolutions. A decoder node
    ``X^{i,j}`` (``j >= 1``) applies two 3x3 convolutions to the
    concatenation of all earlier nodes of its level, ``X^{i,0} ... X^{i,j-1}``,
    and of ``X^{i+1,j-1}`` up-sampled by a 2x2, stride-2 transposed
    convolution [1]_. Level ``i`` has ``base_channels * 2**i`` channels. The
    sub-network of the nodes with ``i + j <= L`` is a complete U-Net++ of
    depth ``L`` ending in ``X^{0,L}``; with deep supervision each
    ``X^{0,L}``, ``L = 1 ... depth``, has its own 1x1 convolution head.

    All convolutions are zero-padded ("same"): the output has the input's
    size, which must be divisible by ``2**depth``.

    Parameters
    ----------
    in_channels : int
        Image channels.
    num_classes : int
        Output maps (logits) per head.
    depth : int
        Number of 2x2 poolings; the papers use 4 (five levels, 15 nodes).
    base_channels : int
        Channels of level 0; level ``i`` has ``base_channels * 2**i``. The
        papers use 32 ([32, 64, 128, 256, 512]).
    deep_supervision : bool
        One head per ``X^{0,L}``, ``L = 1 ... depth``, all trained (with
        :func:`napari_unet.deep_supervision.deep_supervision_loss` on
        :meth:`forward_heads`). Needed for pruning. Without it only
        ``X^{0,depth}`` has a head.
    output_level : int, optional
        What :meth:`forward` returns. ``None`` (default): with deep
        supervision, the ensemble of all heads (see :meth:`forward`), else the
        head of ``X^{0,depth}``. ``L`` in ``1 ... depth``: the network pruned
        at level ``L``, which computes only the nodes with ``i + j <= L`` and
        returns head ``L`` (needs deep supervision unless ``L == depth``).
        Can be changed later through the attribute of the same name; see
        also :meth:`prune`.
    batch_norm : bool
        Batch normalisation after every 3x3 convolution. The 2018 reference
        implementation has none (He-normal initialisation instead), which is
        the default here, as for :class:`~napari_unet.models.UNet`.
    dropout : float
        Dropout probability after every node. The 2018 reference used 0.5
        after every convolution; default 0.
    spatial_dims : int
        2 for images, 3 for volumes.

    Notes
    -----
    *Parameters.* With ``base_channels=32``, ``depth=4``, one input channel
    and one class this network has 9,041,700 parameters (9,041,601 with a
    single head), the 9.04 M of [1]_ and [2]_. The transposed-convolution
    up-sampling of the reference implementation is what gives this count;
    parameter-free bilinear up-sampling followed by the same convolutions
    would give 9.16 M, because each node's first convolution then sees
    ``2 * base_channels * 2**i`` up-sampled channels instead of
    ``base_channels * 2**i``.

    *Pruning.* The nodes with ``i + j > L`` influence none of the heads
    ``1 ... L`` (information flows only to higher ``j`` and lower ``i``), so
    pruning at level ``L`` drops them without changing head ``L``:
    ``UNetPlusPlus(output_level=L)`` skips them at run time, and
    :meth:`prune` returns a smaller model holding only their weights.

    References
    ----------
    .. [1] Z. Zhou, M. M. Rahman Siddiquee, N. Tajbakhsh, J. Liang, "UNet++:
           A Nested U-Net Architecture for Medical Image Segmentation",
           DLMIA 2018. :DOI:`10.1007/978-3-030-00889-5_1`
    .. [2] Z. Zhou, M. M. Rahman Siddiquee, N. Tajbakhsh, J. Liang, "UNet++:
           Redesigning Skip Connections to Exploit Multiscale Features in
           Image Segmentation", IEEE TMI 39(6), 2020.
           :DOI:`10.1109/TMI.2019.2959609`

    Examples
    --------
    >>> net = UNetPlusPlus(num_classes=1)
    >>> sum(p.numel() for p in net.parameters())
    9041700
    >>> net.output_shape((256, 256)), net.divisor, net.context
    ((256, 256), 16, 94)
    >>> small = net.prune(2)
    >>> small.depth, small.output_level, small.context
    (2, 2, 22)
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        depth: int = 4,
        base_channels: int = 32,
        deep_supervision: bool = True,
        output_level: int | None = None,
        batch_norm: bool = False,
        dropout: float = 0.0,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        _check_spatial_dims(spatial_dims)
        for name, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("depth", depth),
            ("base_channels", base_channels),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout}")

        self.in_channels = in_channels
        self.num_classes = num_classes
        self.depth = depth
        self.base_channels = base_channels
        self.deep_supervision = bool(deep_supervision)
        # Set by the training engine: in training mode forward() then returns
        # every head, which DistributedDataParallel (wrapping forward only) needs.
        self.return_heads = False
        self.batch_norm = bool(batch_norm)
        self.dropout = float(dropout)
        self.spatial_dims = spatial_dims
        self.output_level = output_level  # validated by the property setter

        channels = [base_channels * 2**level for level in range(depth + 1)]
        kwargs = {"padding": "same", "batch_norm": self.batch_norm}

        def node(module: nn.Module) -> nn.Module:
            return nn.Sequential(module, nn.Dropout(dropout)) if dropout > 0 else module

        # Flat dicts keyed by node name: a pruned model's state dict is then a
        # subset of the full one, with the same names.
        self.nodes = nn.ModuleDict()
        self.up = nn.ModuleDict()
        self.nodes[_key(0, 0)] = node(ConvBlock(spatial_dims, in_channels, channels[0], **kwargs))
        for i in range(1, depth + 1):
            self.nodes[_key(i, 0)] = node(
                Down(spatial_dims, channels[i - 1], channels[i], **kwargs)
            )
        for i in range(depth):
            for j in range(1, depth - i + 1):
                self.up[_key(i, j)] = UpConv(spatial_dims, channels[i + 1], channels[i])
                self.nodes[_key(i, j)] = node(
                    ConvBlock(spatial_dims, (j + 1) * channels[i], channels[i], **kwargs)
                )
        levels = range(1, depth + 1) if self.deep_supervision else (depth,)
        self.heads = nn.ModuleDict(
            {str(level): _CONV[spatial_dims](channels[0], num_classes, 1) for level in levels}
        )
        he_normal_(self)

    # -- configuration -------------------------------------------------------------------------

    @property
    def output_level(self) -> int | None:
        """``None`` for the ensemble (or the only head), or the pruning level ``L``."""
        return self._output_level

    @output_level.setter
    def output_level(self, level: int | None) -> None:
        if level is not None:
            if isinstance(level, bool) or not isinstance(level, int):
                raise ValueError(f"`output_level` must be None or an integer, got {level!r}")
            if not 1 <= level <= self.depth:
                raise ValueError(
                    f"`output_level` must be None or in [1, {self.depth}] (`depth`), got {level}"
                )
            if not self.deep_supervision and level != self.depth:
                raise ValueError(
                    f"`output_level` {level} needs the head of X^{{0,{level}}}, which only "
                    f"exists with `deep_supervision=True`; without it only {self.depth} "
                    "(`depth`) or None is possible"
                )
        self._output_level = level

    @property
    def mode(self) -> str:
        """``"ensemble"``, or ``"L<level>"`` for a pruned network (``"L4"`` = final head)."""
        if self.output_level is None and self.deep_supervision:
            return "ensemble"
        return f"L{self.output_level or self.depth}"

    @property
    def padding(self) -> str:
        """Always ``"same"``: zero-padded convolutions, output size = input size."""
        return "same"

    def config(self) -> dict:
        """The constructor arguments, enough to rebuild this architecture and mode."""
        return {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "depth": self.depth,
            "base_channels": self.base_channels,
            "deep_supervision": self.deep_supervision,
            "output_level": self.output_level,
            "batch_norm": self.batch_norm,
            "dropout": self.dropout,
            "spatial_dims": self.spatial_dims,
        }

    def prune(self, level: int) -> UNetPlusPlus:
        """A smaller copy that computes and stores only what head ``level`` needs.

        Parameters
        ----------
        level : int
            ``L`` in ``1 ... depth``.

        Returns
        -------
        pruned : UNetPlusPlus
            A new model of depth ``L`` with ``output_level=L``, holding copies
            of the weights of the nodes ``X^{i,j}``, ``i + j <= L``, and of
            heads ``1 ... L``. Its :meth:`forward` equals head ``L`` of this
            model for inputs this model accepts; it also accepts any size
            divisible by ``2**L``. Training mode, device and dtype are kept.

        Raises
        ------
        ValueError
            If ``level`` is out of range or this model has no head ``level``.
        """
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= self.depth:
            raise ValueError(f"`level` must be an integer in [1, {self.depth}], got {level!r}")
        if not self.deep_supervision and level != self.depth:
            raise ValueError(
                f"`level` {level}: pruning below `depth` needs `deep_supervision=True` "
                "(only then are the intermediate heads trained)"
            )
        config = self.config()
        config.update(depth=level, output_level=level)
        pruned = UNetPlusPlus(**config)
        source = self.state_dict()
        pruned.load_state_dict({name: source[name] for name in pruned.state_dict()})
        reference = next(self.parameters())
        return pruned.to(device=reference.device, dtype=reference.dtype).train(self.training)

    # -- forward -------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of the selected output (see ``output_level``).

        Parameters
        ----------
        x : torch.Tensor
            Shape (batch, in_channels, *spatial); every spatial size must be
            divisible by ``2**depth`` (:attr:`divisor`).

        Returns
        -------
        logits : torch.Tensor
            Shape (batch, num_classes, *spatial). For a pruned level or a
            single head, that head's raw logits. For the ensemble,
            ``log(mean_L softmax(logits_L))``: log-probabilities whose softmax
            is exactly the average of the heads' softmax probabilities (the
            papers average the heads' probability maps). Averaging logits
            instead would give their normalised geometric mean. In training
            mode with ``return_heads`` set, the list of :meth:`forward_heads`.
        """
        self._check_input(x)
        if self.return_heads and self.training:
            return self.forward_heads(x)  # type: ignore[return-value]
        level = self.output_level
        if level is not None or not self.deep_supervision:
            level = level or self.depth
            top = self._nodes(x, level)[0]
            return self.heads[str(level)](top[-1])
        heads = self._heads(x)
        log_probs = torch.stack([h.log_softmax(dim=1) for h in heads])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(heads))

    def forward_heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every head, for deep-supervision training.

        Always computes the whole network, whatever ``output_level``.

        Parameters
        ----------
        x : torch.Tensor
            Shape (batch, in_channels, *spatial), spatial sizes divisible by
            ``2**depth``.

        Returns
        -------
        heads : list of torch.Tensor
            ``depth`` tensors of shape (batch, num_classes, *spatial), the
            logits of ``X^{0,1} ... X^{0,depth}``; one tensor (of
            ``X^{0,depth}``) without deep supervision.
        """
        self._check_input(x)
        return self._heads(x)

    def _heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        top = self._nodes(x, self.depth)[0]
        return [self.heads[key](top[int(key)]) for key in self.heads]

    def _nodes(self, x: torch.Tensor, level: int) -> list[list[torch.Tensor]]:
        """Compute the nodes ``X^{i,j}`` with ``i + j <= level``; ``out[i][j]``.

        Column by column, so that a level's maps can be dropped as soon as its
        last node is computed (only level 0's are kept, for the heads).
        """
        out: list[list[torch.Tensor]] = [[] for _ in range(level + 1)]
        out[0].append(self.nodes[_key(0, 0)](x))
        for i in range(1, level + 1):
            out[i].append(self.nodes[_key(i, 0)](out[i - 1][0]))
        for j in range(1, level + 1):
            for i in range(level - j, -1, -1):
                up = self.up[_key(i, j)](out[i + 1][j - 1])
                out[i].append(self.nodes[_key(i, j)](torch.cat([*out[i], up], dim=1)))
            out[level - j + 1] = []  # X^{level-j+1, *} is needed by no later node
        return out

    # -- shape helpers (the same interface as UNet) --------------------------------------------

    @property
    def halo(self) -> tuple[int, ...]:
        """Context lost per side and axis: always 0 (same padding)."""
        return (0,) * self.spatial_dims

    @property
    def context(self) -> int:
        """Pixels per side over which a tile's edge can change the output.

        Zero padding at a tile's edge reaches into each node's map: a node's
        reach is the largest reach among its inputs (concatenation) plus one
        pixel of its level per 3x3 convolution; a 2x2 pooling halves the
        reach (rounding up) and an up-convolution doubles it. Followed
        through the nested topology this is the reach of ``X^{0,L}``: 94
        pixels for the ensemble and head 4, then 46, 22 and 8 for heads 3, 2
        and 1. These equal the same-padding U-Net's of depth ``L``: the
        farthest-reaching path runs down the encoder and straight back up
        (the U-Net's own path); the dense skips add paths with more
        convolutions, but at finer levels, where they reach less. Tiles that overlap by more than
        twice this are exact (:func:`napari_unet.tiling.predict_tiled`).
        """
        level = self.output_level or self.depth
        # The ensemble's context is that of its farthest-reaching head, the last.
        return self._reach(level)

    @staticmethod
    def _reach(level: int) -> int:
        reach = [[2]]  # X^{0,0}: two 3x3 convolutions on the input
        for i in range(1, level + 1):
            reach.append([-(-reach[i - 1][0] // 2) + 2])
        for j in range(1, level + 1):
            for i in range(level - j, -1, -1):
                reach[i].append(max(*reach[i], 2 * reach[i + 1][j - 1]) + 2)
        return reach[0][level]

    @property
    def floats_per_pixel_per_base_channel(self) -> float:
        """Activation memory of one inference forward pass, for tile-size budgets.

        Peak resident memory growth of a CPU forward pass in inference mode,
        in float32 values per input pixel and per base channel: ``4.5 + 2.5 L``
        with ``L`` the pruning level (``depth`` for the ensemble), that is
        7.0, 9.5, 12.0 and 14.5 for L1 ... L4, measured for depth 4, base 32
        on 512 x 512 (``benchmarks/bench_unetpp.py``); the same-padding U-Net
        needs about 5.5. The dense skips cost this: node ``X^{0,j}``
        concatenates ``j + 1`` full-resolution maps.
        """
        return 4.5 + 2.5 * (self.output_level or self.depth)
