"""Data augmentation: elastic deformation, flips, rotations, shifts, grey values.

The U-Net paper [1]_ (section 3.1) trains from very few annotated images by
deforming them elastically: random displacement vectors on a coarse 3 x 3
grid, drawn from a Gaussian with 10 pixels standard deviation, interpolated
bicubically to a per-pixel displacement field. :func:`elastic_deform` does
that in PyTorch, on whatever device the image lives on, for one sample or a
batch, in 2D and 3D.

The transform classes (:class:`RandomFlip`, :class:`RandomRot90`,
:class:`RandomShift`, :class:`ElasticDeform`, :class:`RandomContrast`,
:class:`RandomGamma`, :class:`GaussianNoise`) share one interface and chain
with :class:`Compose`. Geometric transforms move image, labels and weights
together; grey-value transforms change the image only. Every random choice
comes from a NumPy :class:`~numpy.random.Generator`, so the same seed gives
the same result.

Conventions: images are ``(C, Y, X)`` or ``(C, Z, Y, X)``, labels (integer
instance ids or classes) and weights are ``(Y, X)`` or ``(Z, Y, X)``. Inputs
may be NumPy arrays or torch tensors; each output is of the same kind (and
on the same device) as the corresponding input. Inputs are never modified.

References
----------
.. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks
       for Biomedical Image Segmentation", MICCAI 2015.
       :DOI:`10.1007/978-3-319-24574-4_28`
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Compose",
    "ElasticDeform",
    "GaussianNoise",
    "RandomContrast",
    "RandomFlip",
    "RandomGamma",
    "RandomRot90",
    "RandomShift",
    "Sample",
    "Transform",
    "elastic_deform",
]

Array = TypeVar("Array", np.ndarray, torch.Tensor)
RandomState = np.random.Generator | int | None


class Sample(NamedTuple):
    """An image with its (optional) labels and weights; unpacks as a tuple."""

    image: np.ndarray | torch.Tensor
    labels: np.ndarray | torch.Tensor | None = None
    weights: np.ndarray | torch.Tensor | None = None


def _generator(rng: RandomState) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise ValueError(f"`rng` must be a numpy Generator, an int seed or None, got {type(rng)}")


def _to_tensor(x: np.ndarray | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if device is None else x.to(device)
    # torch.from_numpy shares memory and rejects negative strides (e.g. after np.flip)
    tensor = torch.from_numpy(np.ascontiguousarray(x))
    return tensor if device is None else tensor.to(device)


def _like(x: torch.Tensor, original: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """``x`` as the kind of ``original``: a NumPy array, or a tensor on its device."""
    if isinstance(original, torch.Tensor):
        return x.to(original.device)
    return x.cpu().numpy()


def _float_image(image: torch.Tensor) -> torch.Tensor:
    return image if image.dtype in (torch.float32, torch.float64) else image.float()


def _mirror(index: torch.Tensor, size: int | torch.Tensor) -> torch.Tensor:
    """Fold integer indices into ``[0, size)`` by mirroring about the edge pixels.

    The same boundary as ``grid_sample(padding_mode="reflection",
    align_corners=True)`` (scipy's ``mode="mirror"``): ... 2 1 | 0 1 2 ... n-1 | n-2 ...
    ``size`` may be a tensor broadcasting against ``index`` (one size per axis).
    """
    period = torch.as_tensor(2 * (size - 1), device=index.device).clamp_min(1)
    folded = torch.remainder(index, period)
    return torch.minimum(folded, period - folded)


def _cubic_matrix(size: int, grid: int, device: torch.device) -> torch.Tensor:
    """(size, grid) matrix that upsamples ``grid`` control points to ``size`` pixels.

    Its columns are PyTorch's bicubic interpolation (cubic convolution,
    ``align_corners=True``: the outer control points sit on the first and last
    pixel) of the unit vectors, so that ``matrix @ values`` equals
    ``F.interpolate(..., mode="bicubic")`` along one axis. Bicubic interpolation
    is separable, so one matrix per axis interpolates a 2D or 3D grid, and
    costs a few small matrix products instead of a full-size convolution.
    """
    eye = torch.eye(grid, dtype=torch.float32, device=device).reshape(grid, 1, grid, 1)
    columns = F.interpolate(eye, size=(size, 1), mode="bicubic", align_corners=True)
    return columns.reshape(grid, size).T.contiguous()


def _displacement_field(coarse: torch.Tensor, spatial_shape: tuple[int, ...]) -> torch.Tensor:
    """Per-pixel displacements (B, *spatial, ndim) from coarse (B, ndim, grid, ...).

    The displacement components stay in the order of ``coarse``'s axis 1.
    """
    field = coarse
    # Interpolate the last axis by a matrix product and rotate it to the front of
    # the spatial axes; after ndim steps every axis is done and back in place.
    # (One einsum over all axes is 20x slower here: it becomes a badly shaped bmm.)
    for n in reversed(spatial_shape):
        matrix = _cubic_matrix(n, coarse.shape[-1], coarse.device)
        field = torch.movedim(field @ matrix.T, -1, 2)
    return field.movedim(1, -1).contiguous()


def _check_sample(
    image: torch.Tensor,
    labels: torch.Tensor | None,
    weights: torch.Tensor | None,
    spatial_dims: int | None,
) -> tuple[int, bool]:
    """Return (spatial_dims, batched) after checking the shapes agree."""
    if spatial_dims is None:
        if image.ndim not in (3, 4):
            raise ValueError(
                f"`image` must be (C, Y, X) or (C, Z, Y, X), got shape {tuple(image.shape)}; "
                "pass `spatial_dims` for a batch (B, C, ...)"
            )
        spatial_dims, batched = image.ndim - 1, False
    else:
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims}")
        if image.ndim not in (spatial_dims + 1, spatial_dims + 2):
            raise ValueError(
                f"`image` (shape {tuple(image.shape)}) must have {spatial_dims + 1} dimensions "
                f"(C, *spatial) or {spatial_dims + 2} (B, C, *spatial) for "
                f"`spatial_dims`={spatial_dims}"
            )
        batched = image.ndim == spatial_dims + 2
    expected = (image.shape[0], *image.shape[2:]) if batched else tuple(image.shape[1:])
    for name, x in (("labels", labels), ("weights", weights)):
        if x is not None and tuple(x.shape) != tuple(expected):
            raise ValueError(
                f"`{name}` (shape {tuple(x.shape)}) must have shape {tuple(expected)}: the "
                f"spatial shape of `image` (shape {tuple(image.shape)})"
            )
    return spatial_dims, batched


def elastic_deform(
    image: Array,
    labels: Array | None = None,
    weights: Array | None = None,
    *,
    grid: int = 3,
    sigma: float = 10.0,
    rng: RandomState = None,
    spatial_dims: int | None = None,
) -> Sample:
    """Random smooth elastic deformation of an image with its labels and weights.

    Parameters
    ----------
    image : (C, Y, X), (C, Z, Y, X) or batched (B, C, ...) array or tensor
        The image. Floating-point images keep their dtype (float32 or
        float64); other dtypes are returned as float32, since cubic
        interpolation creates new values.
    labels : (Y, X) or (Z, Y, X) (or (B, ...)) array or tensor of int, optional
        Instance ids or classes. Nearest-neighbour: every output value is a
        copy of an input value, of any dtype or size (ids above 2**24 are
        safe; they are gathered by index, never interpolated).
    weights : same shape as ``labels``, optional
        Loss weights, sampled nearest-neighbour at the same source pixel as
        the labels, so each label keeps its own weight (and ignored pixels
        stay exactly 0).
    grid : int, optional
        Control points per axis of the coarse displacement grid (>= 2); the
        outer points sit on the image border.
    sigma : float, optional
        Standard deviation of the displacements at the control points, in
        pixels (>= 0).
    rng : numpy.random.Generator or int, optional
        Randomness; the same seed gives the same deformation on any device.
    spatial_dims : {2, 3}, optional
        Needed only for a batch: ``spatial_dims=2`` with a 4-D image means
        (B, C, Y, X), and then each sample gets its own deformation. By default
        a 3-D image is (C, Y, X) and a 4-D one (C, Z, Y, X).

    Returns
    -------
    sample : Sample
        ``(image, labels, weights)`` deformed, of the input kinds; ``None``
        where no input was given.

    Notes
    -----
    The coarse displacements are interpolated to every pixel with bicubic
    (2D) or tricubic (3D) cubic convolution, as separable matrix products.
    The image is resampled with ``torch.nn.functional.grid_sample``: bicubic
    in 2D; in 3D trilinear, because PyTorch's bicubic sampling exists only for
    4-D input. Labels and weights are gathered by index: an image of flat pixel
    indices is sampled nearest-neighbour on the same grid (float32 holds them
    exactly up to 2**24 pixels, float64 beyond), and those indices pick the
    output values. Outside the image, values are mirrored about the border
    pixels (``grid_sample``'s ``"reflection"`` with ``align_corners=True``,
    scipy's ``"mirror"``), so there are no empty corners.

    Examples
    --------
    >>> image = np.random.default_rng(0).random((1, 64, 64), dtype=np.float32)
    >>> labels = np.zeros((64, 64), dtype=np.uint32)
    >>> labels[20:40, 20:40] = 2**31
    >>> out_image, out_labels, _ = elastic_deform(image, labels, rng=1)
    >>> out_image.shape, out_image.dtype
    ((1, 64, 64), dtype('float32'))
    >>> sorted(np.unique(out_labels).tolist())
    [0, 2147483648]
    """
    rng = _generator(rng)
    if int(grid) != grid or grid < 2:
        raise ValueError(f"`grid` must be an integer >= 2, got {grid}")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"`sigma` must be a non-negative number of pixels, got {sigma}")
    img = _float_image(_to_tensor(image))
    device = img.device
    lab = None if labels is None else _to_tensor(labels, device)
    wts = None if weights is None else _to_tensor(weights, device)
    ndim, batched = _check_sample(img, lab, wts, spatial_dims)
    if not batched:
        img = img.unsqueeze(0)
        lab = None if lab is None else lab.unsqueeze(0)
        wts = None if wts is None else wts.unsqueeze(0)
    batch, shape = img.shape[0], tuple(img.shape[2:])
    with _threads_for_work(batch * math.prod(shape), device):
        out_image, out_labels, out_weights = _deform(img, lab, wts, rng, grid, sigma, ndim)
    if not batched:
        out_image = out_image[0]
        out_labels = None if out_labels is None else out_labels[0]
        out_weights = None if out_weights is None else out_weights[0]
    return Sample(
        _like(out_image, image),
        None if out_labels is None else _like(out_labels, labels),
        None if out_weights is None else _like(out_weights, weights),
    )


# Below this many pixels per thread, PyTorch's parallel regions in grid_sample
# cost more than they save: one 512x512 deformation took 1.1x the SciPy time on
# 2 threads and 1/10.8 of it on 1 thread on the shared 2-core machine
# (docs/performance.md).
_PIXELS_PER_THREAD = 2**20
_THREADS_LOCK = threading.Lock()
_THREADS_SAVED: list[int] = []  # [original count, users] while lowered


@contextlib.contextmanager
def _threads_for_work(pixels: int, device: torch.device) -> Iterator[None]:
    """Run small CPU work on fewer threads; the thread count is restored after.

    ``torch.set_num_threads`` is process-wide, so concurrent callers share one
    saved count and the last to leave restores it.
    """
    wanted = max(1, pixels // _PIXELS_PER_THREAD)
    if device.type != "cpu" or wanted >= torch.get_num_threads():
        yield
        return
    with _THREADS_LOCK:
        if not _THREADS_SAVED:
            _THREADS_SAVED.extend([torch.get_num_threads(), 0])
        _THREADS_SAVED[1] += 1
        torch.set_num_threads(min(wanted, _THREADS_SAVED[0]))
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_SAVED[1] -= 1
            if _THREADS_SAVED[1] == 0:
                torch.set_num_threads(_THREADS_SAVED.pop(0))
                _THREADS_SAVED.clear()


def _deform(
    img: torch.Tensor,
    lab: torch.Tensor | None,
    wts: torch.Tensor | None,
    rng: np.random.Generator,
    grid: int,
    sigma: float,
    ndim: int,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The deformation of a batch (B, C, *shape); labels and weights (B, *shape)."""
    device = img.device
    batch, shape = img.shape[0], tuple(img.shape[2:])
    coarse = rng.normal(0.0, sigma, size=(batch, ndim, *([int(grid)] * ndim)))
    # grid_sample wants the last axis in (x, y[, z]) order and coordinates scaled so
    # that -1 and 1 are the centres of the first and last pixel (align_corners=True)
    sizes = shape[::-1]
    scale = np.array([2.0 / max(n - 1, 1) for n in sizes]).reshape(1, ndim, *([1] * ndim))
    coarse = torch.from_numpy(coarse[:, ::-1] * scale).float().to(device)
    identity = torch.eye(ndim, ndim + 1, dtype=torch.float32, device=device)
    identity = F.affine_grid(
        identity.expand(batch, -1, -1), [batch, 1, *shape], align_corners=True
    )
    sampling_grid = identity.add_(_displacement_field(coarse, shape))
    if sampling_grid.dtype != img.dtype:
        sampling_grid = sampling_grid.to(img.dtype)
    mode = "bicubic" if ndim == 2 else "bilinear"
    out_image = F.grid_sample(
        img, sampling_grid, mode=mode, padding_mode="reflection", align_corners=True
    )

    out_labels = out_weights = None
    if lab is not None or wts is not None:
        # Sample an image of flat pixel indices nearest-neighbour on the same grid:
        # grid_sample does the rounding and the mirroring, and the labels are then
        # gathered by index, so ids of any size and dtype are copied exactly.
        # float32 holds every index exactly below 2**24 pixels; float64 beyond.
        pixels = math.prod(shape)
        index_dtype = torch.float32 if pixels <= 2**24 else torch.float64
        source = torch.arange(pixels, dtype=index_dtype, device=device)
        source = source.reshape(1, 1, *shape).expand(batch, -1, *shape)
        flat = F.grid_sample(
            source,
            sampling_grid.to(index_dtype),
            mode="nearest",
            padding_mode="reflection",
            align_corners=True,
        )
        flat = flat.reshape(batch, pixels).long()
        rows = torch.arange(batch, device=device).unsqueeze(1)
        if lab is not None:
            out_labels = lab.reshape(batch, pixels)[rows, flat].reshape(batch, *shape)
        if wts is not None:
            out_weights = wts.reshape(batch, pixels)[rows, flat].reshape(batch, *shape)
    return out_image, out_labels, out_weights


class Transform:
    """Base class of the augmentations.

    Call a transform as ``transform(image, labels=None, weights=None, *,
    rng=None)`` with NumPy arrays or tensors; it returns a :class:`Sample` of
    the same kinds. Subclasses implement :meth:`apply` on tensors.
    """

    def __call__(
        self,
        image: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor | None = None,
        weights: np.ndarray | torch.Tensor | None = None,
        *,
        rng: RandomState = None,
    ) -> Sample:
        img = _float_image(_to_tensor(image))
        lab = None if labels is None else _to_tensor(labels, img.device)
        wts = None if weights is None else _to_tensor(weights, img.device)
        _check_sample(img, lab, wts, None)
        out = self.apply(Sample(img, lab, wts), _generator(rng))
        return Sample(
            _like(out.image, image),
            None if labels is None else _like(out.labels, labels),
            None if weights is None else _like(out.weights, weights),
        )

    def apply(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Transform a sample of tensors: image (C, *spatial), labels/weights (*spatial)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


# PyTorch implements flip and rot90 for no unsigned type but uint8; these only
# move values, so the signed type of the same width carries the bits unchanged
_SIGNED_VIEW = {torch.uint16: torch.int16, torch.uint32: torch.int32, torch.uint64: torch.int64}


def _geometric(sample: Sample, fn: Callable[[torch.Tensor, int], torch.Tensor]) -> Sample:
    """Apply ``fn(tensor, spatial_offset)`` to image (offset 1) and labels/weights (0).

    ``fn`` must only rearrange values (flip, rotate, index).
    """

    def moved(x: torch.Tensor | None, offset: int) -> torch.Tensor | None:
        if x is None:
            return None
        signed = _SIGNED_VIEW.get(x.dtype)
        if signed is None:
            return fn(x, offset)
        return fn(x.view(signed), offset).view(x.dtype)

    return Sample(moved(sample.image, 1), moved(sample.labels, 0), moved(sample.weights, 0))


class Compose(Transform):
    """Apply transforms one after the other, drawing from one random generator.

    Parameters
    ----------
    transforms : sequence of Transform

    Examples
    --------
    >>> augment = Compose([RandomFlip(), RandomRot90(), ElasticDeform(), RandomGamma()])
    >>> image = np.ones((1, 32, 32), dtype=np.float32)
    >>> labels = np.zeros((32, 32), dtype=np.int32)
    >>> a = augment(image, labels, rng=7)
    >>> b = augment(image, labels, rng=7)
    >>> bool(np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels))
    True
    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)
        for t in self.transforms:
            if not isinstance(t, Transform):
                raise ValueError(f"`transforms` must hold Transform objects, got {t!r}")

    def apply(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for t in self.transforms:
            sample = t.apply(sample, rng)
        return sample


class RandomFlip(Transform):
    """Flip each spatial axis with probability ``p``.

    Parameters
    ----------
    p : float
        Probability of flipping, per axis.
    axes : sequence of int, optional
        Spatial axes that may flip (0 = first spatial axis); default all. For
        anisotropic stacks flipping Z is still valid.
    """

    def __init__(self, p: float = 0.5, axes: Sequence[int] | None = None) -> None:
        self.p = p
        self.axes = None if axes is None else tuple(axes)

    def apply(self, sample: Sample, rng: np.random.Generator) -> Sample:
        ndim = sample.image.ndim - 1
        axes = range(ndim) if self.axes is None else self.axes
        chosen = [a for a in axes if rng.random() < self.p]
        if not chosen:
            return sample
        return _geometric(sample, lambda x, off: torch.flip(x, [a + off for a in chosen]))


class RandomRot90(Transform):
    """Rotate by a random multiple of 90 degrees in the (Y, X) plane.

    Only the last two axes rotate, so a 3D stack keeps Z (usually the
    anisotropic axis) in place. Non-square images change shape for odd
    multiples.
    """

    def apply(self, sample: Sample, rng: np.random.Generator) -> Sample:
        k = int(rng.integers(4))
        if k == 0:
            return sample
        return _geometric(sample, lambda x, off: torch.rot90(x, k, dims=(-2, -1)))


class RandomShift(Transform):
    """Shift by a random whole number of pixels per axis, mirroring at the border.

    Parameters
    ----------
    max_shift : int or sequence of int
        Largest shift per spatial axis, in pixels; each shift is uniform in
        ``[-max_shift, max_shift]``.
    p : float
        Probability of shifting at all.
    """

    def __init__(self, max_shift: int | Sequence[int] = 16, p: float = 1.0) -> None:
        self.max_shift = max_shift
        self.p = p

    def apply(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        shape = tuple(sample.image.shape[1:])
        limits = np.broadcast_to(np.asarray(self.max_shift, dtype=int), (len(shape),))
        shifts = [int(rng.integers(-m, m + 1)) for m in limits]

        def shift(x: torch.Tensor, off: int) -> torch.Tensor:
            for axis, (s, n) in enumerate(zip(shifts, shape, strict=True)):
                if s:
                    source = _mirror(torch.arange(n, device=x.device) - s, n)
                    x = x.index_select(axis + off, source)
            return x

        return _geometric(sample, shift)


class ElasticDeform(Transform):
    """:func:`elastic_deform` as a transform, applied with probability ``p``.

    Parameters
    ----------
    grid : int
        Control points per axis.
    sigma : float
        Displacement standard deviation in pixels.
    p : float
        Probability of deforming.
    """

    def __init__(self, grid: int = 3, sigma: float = 10.0, p: float = 1.0) -> None:
        self.grid = grid
        self.sigma = sigma
        self.p = p

    def apply(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        return elastic_deform(*sample, grid=self.grid, sigma=self.sigma, rng=rng)


class RandomContrast(Transform):
    """Scale each channel's contrast about its mean, and shift its brightness.

    ``image = (image - mean) * c + mean + b`` with ``c`` uniform in
    ``contrast`` and ``b`` uniform in ``brightness`` (image units), drawn once
    per call.

    Parameters
    ----------
    contrast : (float, float)
        Range of the contrast factor.
    brightness : (float, float)
        Range of the added offset.
    p : float
        Probability of changing the image.
    """

    def __init__(
        self,
        contrast: tuple[float, float] = (0.75, 1.25),
        brightness: tuple[float, float] = (0.0, 0.0),
        p: float = 1.0,
    ) -> None:
        self.contrast = contrast
        self.brightness = brightness
        self.p = p

    def apply(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        c = rng.uniform(*self.contrast)
        b = rng.uniform(*self.brightness)
        image = sample.image
        axes = tuple(range(1, image.ndim))
        mean = image.mean(dim=axes, keepdim=True)
        return sample._replace(image=(image - mean) * c + mean + b)


class RandomGamma(Transform):
    """Gamma correction within each channel's grey-value range.

    Each channel is mapped to [0, 1] by its minimum and maximum, raised to
    ``gamma`` (uniform in ``gamma_range``, drawn once per call) and mapped
    back, so the range is kept and only the mid-tones move.

    Parameters
    ----------
    gamma_range : (float, float)
        Range of the exponent, positive; < 1 brightens, > 1 darkens.
    p : float
        Probability of changing the image.
    """

    def __init__(self, gamma_range: tuple[float, float] = (0.7, 1.5), p: float = 1.0) -> None:
        if min(gamma_range) <= 0:
            raise ValueError(f"`gamma_range` must be positive, got {gamma_range}")
        self.gamma_range = gamma_range
        self.p = p

    def apply(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        gamma = rng.uniform(*self.gamma_range)
        image = sample.image
        flat = image.reshape(image.shape[0], -1)
        shape = (image.shape[0],) + (1,) * (image.ndim - 1)
        low = flat.min(dim=1).values.reshape(shape)
        span = (flat.max(dim=1).values.reshape(shape) - low).clamp_min(1e-12)
        return sample._replace(image=((image - low) / span).clamp(0, 1) ** gamma * span + low)


class GaussianNoise(Transform):
    """Add Gaussian noise to the image.

    Parameters
    ----------
    std : (float, float)
        Range of the noise standard deviation, in image units (for images
        normalised to zero mean and unit variance, a fraction of that unit);
        drawn once per call.
    p : float
        Probability of adding noise.

    Notes
    -----
    The noise is drawn with a ``torch.Generator`` on the image's device,
    seeded from ``rng``: reproducible for a given seed and device, without
    moving a full-size array between host and GPU.
    """

    def __init__(self, std: tuple[float, float] = (0.0, 0.1), p: float = 1.0) -> None:
        self.std = std
        self.p = p

    def apply(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        std = rng.uniform(*self.std)
        image = sample.image
        generator = torch.Generator(device=image.device)
        generator.manual_seed(int(rng.integers(2**63 - 1)))
        noise = torch.randn(
            image.shape, generator=generator, device=image.device, dtype=image.dtype
        )
        return sample._replace(image=image + std * noise)
