"""Training data from files: folders of images and label images matched by name.

The Python form of the file loading of ``napari-unet train``
(:func:`load_samples`), returning the :class:`napari_unet.training.Sample`
records the training engine takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    from .training import Sample

__all__ = ["load_samples"]


def _labels(path: Path, binary: bool) -> np.ndarray:
    from .io import read_labels

    labels = read_labels(path)
    if labels.ndim not in (2, 3):
        raise InputError(
            f"{path} has shape {labels.shape}, expected (Y, X) or (Z, Y, X)", path=path
        )
    if binary:
        from .metrics import mask_to_instances

        # Per plane: cells of neighbouring sections are different profiles.
        planes = labels.reshape(-1, *labels.shape[-2:])
        labels = np.stack([mask_to_instances(p) for p in planes]).reshape(labels.shape)
    return labels.astype(np.int64 if labels.max(initial=0) > 2**31 - 1 else np.int32)


def _image(path: Path, labels_shape: tuple[int, ...]) -> np.ndarray:
    """An image as (Y, X), (C, Y, X), (Z, Y, X) or (C, Z, Y, X) matching its labels."""
    from .io import is_colour_file, read_image

    image = read_image(path)
    if is_colour_file(path, image):
        image = np.moveaxis(image[..., :3], -1, 0)
        if (image == image[:1]).all():
            image = image[0]  # grey saved as RGB
    elif image.ndim == len(labels_shape) + 1 and image.shape[:-1] == labels_shape:
        image = np.moveaxis(image, -1, 0)  # channels last (TIFF)
    if image.shape[-len(labels_shape) :] != labels_shape:
        raise InputError(
            f"{path} (shape {image.shape}) does not match its labels (shape {labels_shape})",
            path=path,
        )
    return image


def load_samples(
    images: str | Path,
    labels: str | Path,
    masks: str | Path | None = None,
    *,
    binary: bool = False,
    names: tuple[str, str, str] = ("images", "labels", "masks"),
) -> tuple[list[Sample], list[str]]:
    """Read training samples from folders of images and label images matched by file name.

    Parameters
    ----------
    images, labels : str or Path
        Folders (or single files) of images and instance label images;
        ``a.tif`` in one goes with ``a.png`` in the other.
    masks : str or Path, optional
        Annotated-pixel masks (non-zero = annotated), matched the same way;
        images without one are fully annotated.
    binary : bool
        Labels are binary (e.g. ISBI 2012: 255 = cell, 0 = membrane): the
        instances are their 4-connected components, plane by plane.
    names : (str, str, str)
        What to call the three folders in messages (e.g. ``"--images"``).

    Returns
    -------
    samples : list of Sample
        Images as (Y, X) or (C, Y, X) (colour files and channels-last TIFFs
        are moved channels first), labels as int32 (int64 if needed).
    stems : list of str
        The file names without suffix, in the samples' order.

    Raises
    ------
    InputError
        Unmatched, unreadable or mismatched files, or different channel counts.
    """
    from .io import files_by_stem, read_image
    from .training import Sample

    image_files = files_by_stem(images, name=names[0])
    label_files = files_by_stem(labels, name=names[1])
    mask_files = files_by_stem(masks, name=names[2]) if masks else {}
    problems = []
    if set(image_files) - set(label_files):
        missing = sorted(set(image_files) - set(label_files))
        problems.append(f"no labels for {', '.join(image_files[n].name for n in missing[:5])}")
    if set(label_files) - set(image_files):
        missing = sorted(set(label_files) - set(image_files))
        problems.append(
            f"no image for labels {', '.join(label_files[n].name for n in missing[:5])}"
        )
    if problems:
        raise InputError(
            f"{names[0]} and {names[1]} are matched by file name: " + "; ".join(problems)
        )
    samples = []
    for stem in sorted(image_files):
        label_array = _labels(label_files[stem], binary)
        image = _image(image_files[stem], label_array.shape)
        mask = None
        if stem in mask_files:
            mask = read_image(mask_files[stem]) != 0
            if mask.shape != label_array.shape:
                raise InputError(
                    f"{mask_files[stem]} (shape {mask.shape}) does not match its labels "
                    f"(shape {label_array.shape})",
                    path=mask_files[stem],
                )
        samples.append(Sample(image, label_array, mask))
    channels = {1 if s.image.ndim == s.labels.ndim else s.image.shape[0] for s in samples}
    if len(channels) > 1:
        raise InputError(f"{names[0]} have different channel counts: {sorted(channels)}")
    return samples, sorted(image_files)
