"""Two more augmentations: random zoom and an uneven-illumination gain field.

They follow the :mod:`napari_unet.augment` interface (a :class:`Transform`
applied to a :class:`Sample` of tensors, randomness from a NumPy generator)
and chain with its :class:`~napari_unet.augment.Compose`. Training uses them
for size-normalised models (``TrainConfig.zoom_range``: objects at sizes
around the normalised one, so a misjudged diameter at prediction does little
harm) and for intensity augmentation (``TrainConfig.intensity``: dim objects
beside bright ones).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .augment import Sample, Transform

__all__ = ["RandomGainField", "RandomZoom"]


class RandomZoom(Transform):
    """Zoom image, labels and weights about the tile centre.

    Objects change size by a factor drawn log-uniformly in ``zoom_range``.
    The image is interpolated linearly with mirrored borders; labels and
    weights are sampled nearest-neighbour, and where a zoom-out reaches past
    the tile the weights are 0 (no loss on invented pixels).

    Parameters
    ----------
    zoom_range : (float, float)
        Range of the zoom factor, positive (> 1 enlarges objects).
    p : float
        Probability of zooming.
    """

    def __init__(self, zoom_range: tuple[float, float] = (0.8, 1.25), p: float = 1.0) -> None:
        if min(zoom_range) <= 0:
            raise ValueError(f"`zoom_range` must be positive, got {zoom_range}")
        self.zoom_range = tuple(zoom_range)
        self.p = p

    def apply(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        low, high = (math.log(z) for z in self.zoom_range)
        zoom = math.exp(rng.uniform(low, high))
        image = sample.image
        spatial = image.ndim - 1
        theta = torch.zeros(1, spatial, spatial + 1, dtype=torch.float64, device=image.device)
        for axis in range(spatial):
            theta[0, axis, axis] = 1.0 / zoom
        grid = F.affine_grid(theta, [1, 1, *image.shape[1:]], align_corners=False)
        out = F.grid_sample(
            image[None].double(),
            grid,
            mode="bilinear",
            padding_mode="reflection",
            align_corners=False,
        )[0].to(image.dtype)

        def nearest(x: torch.Tensor | None) -> torch.Tensor | None:
            if x is None:
                return None
            moved = F.grid_sample(
                x[None, None].double(),
                grid,
                mode="nearest",
                padding_mode="zeros",
                align_corners=False,
            )[0, 0]
            return moved.round().to(x.dtype)

        return Sample(out, nearest(sample.labels), nearest(sample.weights))


class RandomGainField(Transform):
    """Multiply the image by a smooth random gain field (uneven illumination).

    Gains uniform in ``gain_range`` on a coarse ``grid`` x ``grid`` lattice,
    interpolated bicubically over the image (trilinearly in 3D): some objects
    become dim beside bright ones, as under uneven illumination or staining.

    Parameters
    ----------
    gain_range : (float, float)
        Range of the gains at the control points, positive.
    grid : int
        Control points per axis (>= 2).
    p : float
        Probability of changing the image.
    """

    def __init__(
        self, gain_range: tuple[float, float] = (0.3, 1.0), grid: int = 3, p: float = 0.5
    ) -> None:
        if min(gain_range) <= 0 or grid < 2:
            raise ValueError(
                f"`gain_range` must be positive and `grid` >= 2, got {gain_range}, {grid}"
            )
        self.gain_range = tuple(gain_range)
        self.grid = grid
        self.p = p

    def apply(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        image = sample.image
        spatial = tuple(image.shape[1:])
        coarse = rng.uniform(*self.gain_range, size=(self.grid,) * len(spatial))
        field = torch.as_tensor(coarse, dtype=torch.float32, device=image.device)[None, None]
        mode = "bicubic" if len(spatial) == 2 else "trilinear"
        field = F.interpolate(field, size=spatial, mode=mode, align_corners=True)[0]
        return sample._replace(image=image * field.clamp_min(0).to(image.dtype))
