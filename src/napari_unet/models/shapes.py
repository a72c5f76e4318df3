"""Shape helpers shared by the U-Net and U-Net++.

Everything else in napari-unet (tiling, training, export) asks a model about
sizes through this interface, never through the architecture itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["ShapeHelpers", "pool_kernels_for_spacing"]


def pool_kernels_for_spacing(spacing: Sequence[float], depth: int) -> tuple[tuple[int, ...], ...]:
    """Pooling window per level and axis for anisotropic voxels (nnU-Net's rule).

    At each level an axis is pooled (by 2) only while its voxel size is less
    than twice the finest one; pooling doubles its voxel size. For planes
    twice as far apart as pixels, ``(2, 1, 1)``, the first pooling is
    in-plane only and the voxels are then isotropic.

    Parameters
    ----------
    spacing : sequence of float
        Voxel size per spatial axis (any unit), e.g. (Z, Y, X).
    depth : int
        Number of poolings.

    Returns
    -------
    kernels : tuple of tuple of int
        ``depth`` tuples of 1 or 2 per axis.

    Examples
    --------
    >>> pool_kernels_for_spacing((2.0, 1.0, 1.0), 3)
    ((1, 2, 2), (2, 2, 2), (2, 2, 2))
    >>> pool_kernels_for_spacing((1, 1), 2)
    ((2, 2), (2, 2))
    """
    current = [float(s) for s in spacing]
    if not current or min(current) <= 0 or not all(map(math.isfinite, current)):
        raise ValueError(f"`spacing` must be positive finite voxel sizes, got {tuple(spacing)}")
    kernels = []
    for _ in range(depth):
        finest = min(current)
        kernel = tuple(2 if c < 2 * finest else 1 for c in current)
        current = [c * k for c, k in zip(current, kernel, strict=True)]
        kernels.append(kernel)
    return tuple(kernels)


class ShapeHelpers:
    """Mixin: valid input sizes, output sizes and the halo of a network.

    A subclass sets ``depth``, ``spatial_dims``, ``in_channels`` and
    ``padding``, and may set ``_pool_kernels`` (per-level pooling windows,
    see :func:`pool_kernels_for_spacing`; default 2 along every axis). The
    defaults describe same-padding networks (output size equals input size,
    a positive multiple of :attr:`divisors` per axis); a network with
    another rule overrides :meth:`_output_size`, :meth:`_input_size` and
    :attr:`_size_rule`. Sizes are per axis: an axis pooled fewer times (the
    Z axis of anisotropic volumes) has a smaller divisor and halo.
    """

    depth: int
    spatial_dims: int
    in_channels: int
    padding: str
    _pool_kernels: tuple[tuple[int, ...], ...] | None = None

    @property
    def pool_kernels(self) -> tuple[tuple[int, ...], ...]:
        """Pooling window per level and axis (2 everywhere unless anisotropic)."""
        if self._pool_kernels is None:
            return ((2,) * self.spatial_dims,) * self.depth
        return self._pool_kernels

    @property
    def divisors(self) -> tuple[int, ...]:
        """Per axis, the product of the pooling windows: sizes must divide by it."""
        return tuple(
            math.prod(k[axis] for k in self.pool_kernels) for axis in range(self.spatial_dims)
        )

    @property
    def divisor(self) -> int:
        """The largest of :attr:`divisors`: ``2**depth`` for isotropic pooling."""
        return max(self.divisors, default=2**self.depth)

    @property
    def halo(self) -> tuple[int, ...]:
        """Context lost per side and axis: ``(input - output) / 2``; 0 for ``"same"``."""
        halo = []
        for axis in range(self.spatial_dims):
            n = self._input_size(1, axis)
            halo.append((n - self._output_size(n, axis)) // 2)
        return tuple(halo)

    @property
    def _size_rule(self) -> str:
        if len(set(self.divisors)) > 1:
            return f"every size must be a positive multiple of {self.divisors} (per axis)"
        return f"every size must be a positive multiple of {self.divisor} (2**depth)"

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial output shape for a spatial input shape.

        Raises
        ------
        ValueError
            If ``input_shape`` is not valid for this network; the message
            names the nearest valid shape.
        """
        input_shape = self._spatial(input_shape, "input_shape")
        sizes = tuple(self._output_size(n, axis) for axis, n in enumerate(input_shape))
        if any(s is None for s in sizes):
            nearest = self.valid_input_shape(self.output_shape_lower_bound(input_shape))
            raise ValueError(
                f"input shape {input_shape} is not valid for a depth-{self.depth} "
                f"{type(self).__name__} ({self.padding} padding): {self._size_rule}; "
                f"the nearest valid input shape is {nearest}"
            )
        return sizes  # type: ignore[return-value]

    def output_shape_lower_bound(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Roughly the output shape an input shape would give (for messages)."""
        return tuple(max(1, n - 2 * h) for n, h in zip(input_shape, self.halo, strict=True))

    def is_valid_input_shape(self, input_shape: Sequence[int]) -> bool:
        """Whether ``input_shape`` (spatial) can be fed to the network."""
        input_shape = self._spatial(input_shape, "input_shape")
        return all(self._output_size(n, ax) is not None for ax, n in enumerate(input_shape))

    def valid_input_shape(self, output_shape: Sequence[int]) -> tuple[int, ...]:
        """The smallest valid input shape whose output covers ``output_shape``.

        Parameters
        ----------
        output_shape : sequence of int
            The wanted spatial output shape (at least this large).

        Returns
        -------
        input_shape : tuple of int
            For same padding, each size rounded up to a multiple of
            :attr:`divisor`; for valid padding, ``output + 2 * halo`` rounded
            up to the next size where every pooling sees an even size.
        """
        output_shape = self._spatial(output_shape, "output_shape")
        return tuple(self._input_size(o, axis) for axis, o in enumerate(output_shape))

    def _output_size(self, n: int, axis: int = 0) -> int | None:
        """Output size along one axis, or None if ``n`` is not a valid input size."""
        d = self.divisors[axis]
        return n if n > 0 and n % d == 0 else None

    def _input_size(self, out: int, axis: int = 0) -> int:
        """Smallest valid input size along one axis whose output is >= ``out``."""
        d = self.divisors[axis]
        return max(1, -(-out // d)) * d

    def _spatial(self, shape: Sequence[int], name: str) -> tuple[int, ...]:
        shape = tuple(int(s) for s in shape)
        if len(shape) != self.spatial_dims:
            raise ValueError(f"`{name}` must have {self.spatial_dims} spatial axes, got {shape}")
        return shape

    def _check_input(self, x: torch.Tensor) -> None:
        expected = f"(batch, {self.in_channels}, {', '.join('N' * self.spatial_dims)})"
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"input has shape {tuple(x.shape)}, expected {expected}")
        if not self.is_valid_input_shape(x.shape[2:]):
            try:
                self.output_shape(x.shape[2:])
            except ValueError as err:
                raise ValueError(f"input has shape {tuple(x.shape)}: {err}") from None
