"""Shape helpers shared by the U-Net and U-Net++.

Everything else in napari-unet (tiling, training, export) asks a model about
sizes through this interface, never through the architecture itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class ShapeHelpers:
    """Mixin: valid input sizes, output sizes and the halo of a network.

    A subclass sets ``depth``, ``spatial_dims``, ``in_channels`` and
    ``padding``. The defaults describe same-padding networks (output size
    equals input size, a positive multiple of ``2**depth``); a network with
    another rule overrides :meth:`_output_size`, :meth:`_input_size` and
    :attr:`_size_rule`.
    """

    depth: int
    spatial_dims: int
    in_channels: int
    padding: str

    @property
    def divisor(self) -> int:
        """The first pooling must see sizes divisible by this: ``2**depth``."""
        return 2**self.depth

    @property
    def halo(self) -> tuple[int, ...]:
        """Context lost per side and axis: ``(input - output) / 2``; 0 for ``"same"``."""
        n = self.valid_input_shape((1,) * self.spatial_dims)[0]
        return ((n - self._output_size(n)) // 2,) * self.spatial_dims

    @property
    def _size_rule(self) -> str:
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
        sizes = tuple(self._output_size(n) for n in input_shape)
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
        return all(self._output_size(n) is not None for n in input_shape)

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
        return tuple(self._input_size(o) for o in output_shape)

    def _output_size(self, n: int) -> int | None:
        """Output size along one axis, or None if ``n`` is not a valid input size."""
        return n if n > 0 and n % self.divisor == 0 else None

    def _input_size(self, out: int) -> int:
        """Smallest valid input size along one axis whose output is >= ``out``."""
        return max(1, -(-out // self.divisor)) * self.divisor

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
