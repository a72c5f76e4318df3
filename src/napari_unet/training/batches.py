"""Batches of augmented training tiles, drawn reproducibly from seeded generators."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .. import augment
from ..augment_zoom_gain import RandomGainField, RandomZoom
from .config import TrainConfig
from .data import _BLOCK, _Plane


def _augmentation(config: TrainConfig, square: bool) -> Any:
    """The augmentation pipeline the settings ask for (an ``augment.Compose``)."""
    transforms: list = []
    if config.flips:
        transforms.append(augment.RandomFlip())
        if square:  # odd quarter turns would change a non-square tile's shape
            transforms.append(augment.RandomRot90())
    if config.zoom_range is not None:
        transforms.append(RandomZoom(config.zoom_range))
    if config.elastic:
        transforms.append(
            augment.ElasticDeform(grid=config.elastic_grid, sigma=config.elastic_sigma)
        )
    if config.grey_values:
        # Around the normalised [0, 1] range: mild contrast, brightness and gamma changes.
        transforms.append(augment.RandomContrast(contrast=(0.75, 1.25), brightness=(-0.1, 0.1)))
        transforms.append(augment.RandomGamma(gamma_range=(0.7, 1.5)))
    if config.intensity:
        # Dim, low-contrast, offset and noisy versions of the normalised image.
        transforms.append(RandomGainField((0.25, 1.0), p=0.5))
        transforms.append(augment.RandomGamma(gamma_range=(0.5, 2.0), p=0.5))
        transforms.append(
            augment.RandomContrast(contrast=(0.4, 1.2), brightness=(-0.15, 0.25), p=0.5)
        )
        transforms.append(augment.GaussianNoise(std=(0.0, 0.08), p=0.5))
    return augment.Compose(transforms)


class _Batcher:
    """Draws augmented batches of tiles; all randomness comes from the seeded generators.

    Each slot ``k`` of the global batch has its own generator (plane,
    position and augmentation of tile ``k`` in every iteration): slot 0 is
    seeded with ``seed`` (so a batch of one draws what it always drew), slot
    ``k > 0`` with ``(seed, k)``. A rank that owns slots ``rank * b .. rank *
    b + b - 1`` (``b = batch_size / world_size``) therefore draws exactly the
    tiles a single process with the whole batch draws.
    """

    def __init__(
        self,
        planes: list[_Plane],
        model: nn.Module,
        tile: tuple[int, int],
        config: TrainConfig,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.planes = planes
        self.tile = tile
        self.out = model.output_shape(tile)
        self.margin = tuple((t - o) // 2 for t, o in zip(tile, self.out, strict=True))
        self.config = config
        per_rank = config.batch_size // world_size
        # SeedSequence entropy must be >= 0.
        self.rngs = [
            np.random.default_rng(seed if k == 0 else [seed % 2**64, k])
            for k in range(rank * per_rank, (rank + 1) * per_rank)
        ]
        self.augment = _augmentation(config, tile[-2] == tile[-1])
        # Planes are drawn in proportion to their annotated area.
        sizes = np.array([max(1, len(p.blocks)) for p in planes], dtype=np.float64)
        self.p = sizes / sizes.sum()

    def _position(self, plane: _Plane, rng: np.random.Generator) -> tuple[int, ...]:
        """Tile corner whose output window contains a random annotated pixel."""
        corner = []
        block = plane.blocks[rng.integers(len(plane.blocks))] if len(plane.blocks) else None
        for axis, (size, t, o, m) in enumerate(
            zip(plane.image.shape[1:], self.tile, self.out, self.margin, strict=True)
        ):
            if block is None:
                corner.append(int(rng.integers(size - t + 1)))
                continue
            pixel = int(block[axis]) + int(rng.integers(_BLOCK))
            # Output window [c + m, c + m + o) must contain `pixel`; the tile must fit.
            lo = max(0, pixel - m - o + 1)
            hi = min(size - t, pixel - m)
            corner.append(int(rng.integers(lo, hi + 1)) if hi >= lo else max(0, min(lo, size - t)))
        return tuple(corner)

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, classes, weights = [], [], []
        inner = tuple(slice(m, m + o) for m, o in zip(self.margin, self.out, strict=True))
        for rng in self.rngs:
            plane = self.planes[int(rng.choice(len(self.planes), p=self.p))]
            corner = self._position(plane, rng)
            window = tuple(slice(c, c + t) for c, t in zip(corner, self.tile, strict=True))
            image = torch.from_numpy(plane.image[(slice(None), *window)])
            cls = torch.from_numpy(plane.classes[window])
            w = torch.from_numpy(plane.weights[window])
            image, cls, w = self.augment.apply(augment.Sample(image, cls, w), rng)
            images.append(image)
            classes.append(cls[inner])
            weights.append(w[inner])
        return (
            torch.stack(images).float().contiguous(),
            torch.stack(classes).long(),
            torch.stack(weights).float(),
        )
