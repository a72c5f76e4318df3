"""Settings, the model, and the steps every form of :mod:`napari_unet.segment` shares."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..axes import find_channel_axis, move_channels
from ..normalize import Normalization

if TYPE_CHECKING:
    from torch import nn


#: The post-processing keywords a model file may recommend (besides the threshold).
_POSTPROCESS_KEYS = (
    "method",
    "seed_threshold",
    "min_size",
    "min_seed_size",
    "seed_erosion",
    "split_depth",
    "fill_holes",
)


@dataclass(frozen=True)
class SegmentConfig:
    """Settings of a segmentation run (the same for every front end).

    Parameters
    ----------
    tile : int, optional
        Input tile side in pixels (rounded up to a valid size); None picks
        the largest that fits the device's memory budget.
    tta : bool, optional
        Test-time augmentation: average the 8 rotations and flips (8x slower).
        None: the model's recommendation (``tta`` in its ``postprocessing``,
        chosen on its validation images, e.g. ``em-membranes``), else off.
    threshold : float, optional
        Foreground threshold in (0, 1); None: the model's recommendation
        (bundled models store one), else 0.5.
    batch_size : int
        Tiles per forward pass.
    device : str, optional
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"mps"``.
    level : int, optional
        U-Net++ only: predict with the network pruned at this level.
    backend : str
        Inference engine (:mod:`napari_unet.inference`): ``"auto"``, ``"eager"``,
        ``"compile"`` or ``"onnxruntime"``. ``"auto"`` may choose ONNX Runtime
        once its export is cached, whose probabilities differ from eager ones
        by float rounding: give ``"eager"`` for bit-identical repeat runs.
    precision : str
        ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``. ``"auto"`` resolves to
        bf16 only where the model's ``inference_check`` metadata approves it.
    axes : str, optional
        What the image's axes are, e.g. ``"ZYX"``, ``"TYX"``, ``"TZYX"``,
        ``"CZYX"``, ``"YXC"`` (letters T, C, Z, Y, X; ``C`` names the channel
        axis). None: an image with one axis besides channels, Y and X is a
        Z-stack (ZYX or CZYX); with more leading axes, name them to link.
    probabilities : bool
        Keep the probabilities in the result (else None, freeing memory).
    postprocess : mapping, optional
        Further keywords of :func:`~napari_unet.postprocess.probabilities_to_labels`
        (``method``, ``min_size``, ``seed_threshold``, ...); None: the model's
        recommendation (chosen on its validation images,
        :mod:`napari_unet.tuning`, or the bundled card's), else the defaults.
        Sizes are in pixels at the model's object size (the image's own when
        not rescaled).
    diameter : float, "auto", None or "default"
        Typical object diameter in the image, pixels (:mod:`napari_unet.scale`):
        the image is rescaled so objects have the model's training size
        (``object_diameter`` in its file), predicted, and the labels
        returned at the original size. Objects within the model's trained
        range (``object_diameter_range``) are predicted as they are, except
        that larger ones than the model's size are shrunk when the network
        is surer of its objects that way (:func:`napari_unet.scale.choose_zoom`,
        one extra pass). ``"auto"``: estimated from the image
        by the model (the value used is in ``Segmentation.info``); None: no
        rescaling. ``"default"``: ``"auto"`` for instance models (three
        classes) that record their object size, else None. In-memory images
        only (:func:`segment_dask` and :func:`segment_chunked` never rescale).
    link_planes : bool
        A 2D model on a (Z, Y, X) stack: link the planes' instances into 3D
        objects by overlap (:func:`napari_unet.linking.link_planes`), so one
        cell is one id through the stack. For the Z axis only (see ``axes``;
        each T of a TZYX series on its own, T planes never); images without
        a Z axis are not changed. The front ends turn it on for Z-stacks.
        :func:`segment_chunked` links across planes and chunk borders (the
        same objects, up to numbering); :func:`segment_dask` links planes
        as they are computed (see its Notes). A 3D model
        (``spatial_dims=3``) segments the volume as a volume instead.
    """

    tile: int | None = None
    tta: bool | None = None
    threshold: float | None = None
    batch_size: int = 1
    device: str | None = "auto"
    level: int | None = None
    backend: str = "auto"
    precision: str = "auto"
    axes: str | None = None
    probabilities: bool = True
    postprocess: Mapping[str, Any] | None = None
    diameter: float | str | None = "default"
    model_diameter: float | None = None  # filled in by resolve()
    model_diameter_range: tuple[float, float] | None = None  # filled in by resolve()
    num_classes: int | None = None  # filled in by resolve()
    link_planes: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.diameter, str) and self.diameter not in ("auto", "default"):
            raise ValueError(f"`diameter` must be a number, 'auto' or None, got {self.diameter!r}")
        if not isinstance(self.diameter, str | type(None)) and not self.diameter > 0:
            raise ValueError(
                f"`diameter` must be a positive number of pixels, got {self.diameter}"
            )
        if self.tile is not None and (isinstance(self.tile, bool) or self.tile < 1):
            raise ValueError(f"`tile` must be a positive number of pixels, got {self.tile!r}")
        if isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {self.batch_size!r}")
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"`threshold` must be in (0, 1), got {self.threshold}")
        if self.axes is not None:
            letters = self.axes.upper()
            if (
                not set(letters) <= set("TCZYX")
                or len(set(letters)) != len(letters)
                or letters.replace("C", "")[-2:] != "YX"
            ):
                raise ValueError(
                    f"`axes` {self.axes!r}: use the letters T, C, Z, Y, X once each, with Y and X "
                    "last apart from C (e.g. ZYX, TZYX, CZYX, YXC)"
                )
        if {"threshold", "spatial_dims"} & set(self.postprocess or {}):
            raise ValueError("`postprocess` must not set `threshold` or `spatial_dims`")

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], **settings: Any) -> SegmentConfig:
        """Settings with the model's recommendations filled in.

        Parameters
        ----------
        metadata : mapping
            A model file's metadata (:func:`napari_unet.io.load_model`).
        **settings
            Fields of :class:`SegmentConfig`; a ``threshold`` or
            ``postprocess`` of None is replaced by the model's recommendation
            (``metadata["pretrained"]["postprocessing"]``), and an unset
            ``level`` by the model's recommended pruning level, if any.
        """
        return cls(**settings).resolve(metadata)

    def resolve(self, metadata: Mapping[str, Any]) -> SegmentConfig:
        """A copy with the unset settings taken from the model's recommendation."""
        from ..pretrained import recommended_threshold
        from ..tuning import postprocessing_options

        card = (metadata.get("pretrained") or {}).get("postprocessing") or {}
        stored = postprocessing_options(dict(metadata))  # chosen on the model's validation
        changes: dict[str, Any] = {
            "model_diameter": metadata.get("object_diameter"),
            "model_diameter_range": _size_range(metadata.get("object_diameter_range")),
            "num_classes": metadata.get("num_classes"),
        }
        if self.threshold is None:
            changes["threshold"] = stored.get("threshold", recommended_threshold(dict(metadata)))
        if self.tta is None:
            changes["tta"] = bool((metadata.get("postprocessing") or {}).get("tta", False))
        if self.level is None and card.get("level") is not None:
            changes["level"] = int(card["level"])
        if self.precision == "auto":
            # bf16 only where the model file records that it kept the fp32 labels.
            from ..inference import default_precision

            changes["precision"] = default_precision(metadata, self.device)
        if self.postprocess is None:
            # e.g. em-membranes: cells are the 4-connected components ("method": "components").
            changes["postprocess"] = {k: card[k] for k in _POSTPROCESS_KEYS if k in card}
            if metadata.get("postprocessing"):
                changes["postprocess"] = {k: v for k, v in stored.items() if k != "threshold"}
        return replace(self, **changes) if changes else self


def _size_range(value: Any) -> tuple[float, float] | None:
    """A model's ``object_diameter_range`` (two positive numbers), or None."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (low, high) if 0 < low <= high else None


@dataclass
class Segmentation:
    """The result of :func:`segment`.

    Attributes
    ----------
    labels : ndarray of uint32
        The image's shape without the channel axis; 0 = background, ids
        ``1 ... N`` over the whole stack.
    probabilities : ndarray of float32 or None
        ``(num_classes, *labels.shape)``; None unless ``config.probabilities``.
    config : SegmentConfig
        The settings used, with the model's recommendations filled in.
    info : dict
        What the run decided: ``diameter`` (pixels, None when not
        rescaled), ``factor`` (the zoom predicted at), ``estimated``,
        ``linked_axis`` (the Z axis of ``labels`` whose planes were linked
        into 3D objects, or None), ``spatial_dims`` (3 for a 3D model);
        ``backend`` and ``precision``: the inference engine that ran (what
        ``"auto"`` chose; in-memory runs).
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    config: SegmentConfig
    info: dict[str, Any] = field(default_factory=dict)  # e.g. the diameter used


def load_segmenter(model: Any, *, level: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The model and its metadata, from a file, a bundled name or a module.

    Parameters
    ----------
    model : str, path-like, nn.Module or (nn.Module, dict)
        A model file (``.safetensors`` or bioimage.io package), a bundled
        model name (``"nuclei"``, see :func:`napari_unet.pretrained.list_pretrained`),
        a module, or a module with its metadata as :func:`~napari_unet.io.load_model`
        returns them.
    level : int, optional
        Prune a U-Net++ to this level.

    Returns
    -------
    model : nn.Module
        On the CPU, in eval mode.
    metadata : dict
        Empty for a bare module.

    Raises
    ------
    FileNotFoundError
        If a path does not exist and is no bundled name.
    ValueError
        If the file is not a model file, ``level`` does not fit the model,
        or the model is not 2D.
    """
    if isinstance(model, tuple):
        net, metadata = model[0], dict(model[1] or {})
    elif isinstance(model, (str, os.PathLike)):
        from ..io.models import load_model
        from ..pretrained import resolve_model

        net, metadata = load_model(resolve_model(model), device=None)
    else:
        net, metadata = model, {}
    if level is not None:
        if not hasattr(net, "prune"):
            raise ValueError(
                f"a pruning level applies to U-Net++ models; this is {type(net).__name__}"
            )
        net = net.prune(level)
    if getattr(net, "spatial_dims", 2) not in (2, 3):
        raise ValueError("segmentation supports 2D and 3D models only")
    return net, metadata


def _require_2d(net: nn.Module, where: str) -> None:
    if getattr(net, "spatial_dims", 2) != 2:
        raise ValueError(
            f"{where} runs 2D models plane by plane; a 3D model segments volumes in memory "
            "(segment / iter_segment) or chunk by chunk (segment_chunked)"
        )


def _setup(
    model: Any, config: SegmentConfig | None, normalization: Any
) -> tuple[nn.Module, SegmentConfig, Normalization]:
    net, metadata = load_segmenter(model)
    config = (config or SegmentConfig()).resolve(metadata)
    if config.level is not None:
        net, _ = load_segmenter(net, level=config.level)
    if normalization is None:
        normalization = metadata.get("normalization")
    if not isinstance(normalization, Normalization):
        normalization = Normalization.from_dict(normalization)
    return net, config, normalization


def _predict_kwargs(config: SegmentConfig, *, backend: bool = True) -> dict[str, Any]:
    """The tiling keywords of a configuration (one place for every path)."""
    kwargs: dict[str, Any] = {
        "tile_shape": None if config.tile is None else (config.tile, config.tile),
        "batch_size": config.batch_size,
        "device": config.device,
    }
    if backend:  # predict_dask chooses its own engine per chunk
        kwargs.update(backend=config.backend, precision=config.precision)
    return kwargs


def _labels_of_plane(probs: np.ndarray, config: SegmentConfig) -> np.ndarray:
    """Instance labels ``1 ... n`` of one (classes, Y, X) plane: the one post-processing step."""
    from ..postprocess import probabilities_to_labels

    return probabilities_to_labels(
        probs, threshold=config.threshold, spatial_dims=2, **dict(config.postprocess or {})
    )


def _arranged(net: nn.Module, data: Any, channel_axis: int | None) -> tuple[Any, int | None]:
    """``data`` with its channels just before (Y, X), and that axis (None: one channel)."""
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise ValueError(f"the image (dtype {data.dtype}) is not a real-valued numeric image")
    axis = find_channel_axis(data.shape, net.in_channels, channel_axis)
    if axis is None:
        return data, None
    data = move_channels(data, axis)
    return data, data.ndim - 3


def _axes_channel_axis(config: SegmentConfig, channel_axis: int | None) -> int | None:
    """The channel axis the user named, or the position of ``C`` in ``config.axes``."""
    if channel_axis is None and config.axes and "C" in config.axes.upper():
        return config.axes.upper().index("C")
    return channel_axis


def _z_axis(ndim: int, config: SegmentConfig) -> int | None:
    """The Z axis of the labels (the image without channels), or None."""
    if config.axes is None:
        return 0 if ndim == 3 else None
    letters = config.axes.upper().replace("C", "")
    if len(letters) != ndim:
        raise ValueError(
            f"`axes` {config.axes!r} names {len(letters)} axes besides C, the image has {ndim}"
        )
    return letters.index("Z") if "Z" in letters else None
