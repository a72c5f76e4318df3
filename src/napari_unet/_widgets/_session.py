"""State the four widgets of one viewer share: training set, models, weight settings.

Every viewer gets its own :class:`Session` (held in a weak dictionary keyed
by the viewer), so two napari windows never mix their training sets, and the
state disappears with the viewer. The state is plain data: the Train widget
hands ``TrainingSet.samples()`` straight to the training engine.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from psygnal import Signal

__all__ = ["Session", "TrainedModel", "TrainingEntry", "TrainingSet", "session_for"]


@dataclass
class TrainingEntry:
    """One annotated (Y, X) plane, copied out of the layers when it was added.

    Attributes
    ----------
    image_name, labels_name : str
        The layers it came from (for display and provenance).
    index : tuple of int
        Plane position along the leading axes (``()`` for a 2D image).
    image : ndarray
        (Y, X) or (C, Y, X), channels first.
    labels : ndarray of int
        (Y, X) instances.
    mask : ndarray of bool or None
        (Y, X) annotated pixels (from region rectangles); None = all.
    n_cells : int
        Cells in the annotated part.
    """

    image_name: str
    labels_name: str
    index: tuple[int, ...]
    image: np.ndarray
    labels: np.ndarray
    mask: np.ndarray | None
    n_cells: int

    @property
    def key(self) -> tuple[str, str, tuple[int, ...]]:
        """Adding the same plane of the same layers again replaces the entry."""
        return (self.image_name, self.labels_name, self.index)

    @property
    def channels(self) -> int:
        return 1 if self.image.ndim == 2 else int(self.image.shape[0])

    def describe(self) -> str:
        where = f" plane {', '.join(map(str, self.index))}" if self.index else ""
        region = ""
        if self.mask is not None:
            region = f", region {100 * self.mask.mean():.0f}%"
        return f"{self.image_name} ← {self.labels_name}{where}: {self.n_cells} cells{region}"


class TrainingSet:
    """An ordered collection of annotated planes; emits ``changed`` on every edit."""

    changed = Signal()

    def __init__(self) -> None:
        self._entries: list[TrainingEntry] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(list(self._entries))

    def __getitem__(self, index: int) -> TrainingEntry:
        return self._entries[index]

    @property
    def n_cells(self) -> int:
        return sum(entry.n_cells for entry in self._entries)

    def add(self, entries: list[TrainingEntry]) -> tuple[int, int]:
        """Add entries; one with the key of an existing entry replaces it in place.

        Returns
        -------
        added, replaced : int
        """
        added = replaced = 0
        for entry in entries:
            for position, old in enumerate(self._entries):
                if old.key == entry.key:
                    self._entries[position] = entry
                    replaced += 1
                    break
            else:
                self._entries.append(entry)
                added += 1
        if entries:
            self.changed.emit()
        return added, replaced

    def remove(self, positions: list[int]) -> None:
        """Remove the entries at these positions."""
        drop = set(positions)
        self._entries = [e for i, e in enumerate(self._entries) if i not in drop]
        self.changed.emit()

    def clear(self) -> None:
        self._entries = []
        self.changed.emit()

    def samples(self) -> list[dict[str, Any]]:
        """Training samples for :func:`napari_unet.training.train_iter`."""
        return [{"image": e.image, "labels": e.labels, "mask": e.mask} for e in self._entries]

    def summary(self) -> str:
        if not self._entries:
            return "empty: add annotated images in 'Annotate cells'"
        planes = len(self._entries)
        return f"{planes} plane{'s' if planes != 1 else ''}, {self.n_cells} cells"


@dataclass
class TrainedModel:
    """A model file produced (or loaded) in this session."""

    name: str
    path: Path
    #: Which checkpoint the file holds, e.g. "best checkpoint, iteration 48 of 60".
    note: str = ""
    #: False for a run the user stopped: listed in Predict, but not chosen for it.
    finished: bool = True


@dataclass
class WeightSettings:
    """Border-weight settings, previewed in the Weight map widget and used by Train."""

    w0: float = 10.0
    sigma: float = 5.0
    class_weights: str | None = "balanced"

    def describe(self) -> str:
        balance = "class-balanced" if self.class_weights else "no class balance"
        return f"w0 = {self.w0:g}, σ = {self.sigma:g} px, {balance}"


class Session:
    """Everything the widgets of one viewer share."""

    models_changed = Signal()
    weights_changed = Signal()

    def __init__(self) -> None:
        self.training_set = TrainingSet()
        self.models: list[TrainedModel] = []
        self.weights = WeightSettings()

    def add_model(self, model: TrainedModel) -> None:
        """Remember a model (most recent first); the same path is listed once."""
        self.models = [m for m in self.models if m.path != model.path]
        self.models.insert(0, model)
        self.models_changed.emit()

    def set_weights(self, w0: float, sigma: float, class_weights: str | None) -> None:
        self.weights = WeightSettings(w0, sigma, class_weights)
        self.weights_changed.emit()


_SESSIONS: weakref.WeakKeyDictionary[Any, Session] = weakref.WeakKeyDictionary()


def session_for(viewer: Any) -> Session:
    """The session of ``viewer``, created on first use."""
    session = _SESSIONS.get(viewer)
    if session is None:
        session = _SESSIONS[viewer] = Session()
    return session
