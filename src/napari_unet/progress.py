"""The progress and cancel protocol shared by prediction and training.

Long-running work in napari-unet is written as generators that yield
:class:`Progress` events often; the plain functions drive those generators
and forward the events to an optional ``progress`` callback, and check an
optional ``cancel`` callable between steps. The napari widgets run the same
generators inside a ``thread_worker``, whose Stop button acts between yields.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["Cancelled", "Progress", "drive"]

T = TypeVar("T")


class Cancelled(RuntimeError):
    """Raised when the user cancelled a long-running operation.

    The operation stops cleanly: no partial result is returned.
    """


@dataclass
class Progress:
    """One progress event.

    Attributes
    ----------
    done, total : int
        Steps finished and steps in all (tiles, iterations, ...).
    stage : str
        What is being done, e.g. ``"predict"`` or ``"train"``.
    info : dict
        Extra values for display (loss, metrics, ETA in seconds, ...).
    """

    done: int
    total: int
    stage: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def drive(
    events: Generator[Progress, None, T],
    *,
    progress: Callable[[int, int], Any] | None = None,
    cancel: Callable[[], bool] | None = None,
    on_event: Callable[[Progress], Any] | None = None,
) -> T:
    """Run a progress generator to completion and return its result.

    Parameters
    ----------
    events : generator
        Yields :class:`Progress` events and returns the result.
    progress : callable, optional
        Called as ``progress(done, total)`` for every event.
    cancel : callable, optional
        Checked after every event; returning True closes the generator and
        raises :class:`Cancelled`.
    on_event : callable, optional
        Called with every :class:`Progress` event itself (stage and info too).

    Returns
    -------
    result
        The generator's return value.
    """
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(event.done, event.total)
        if on_event is not None:
            on_event(event)
        if cancel is not None and cancel():
            events.close()
            during = f" during {event.stage}" if event.stage else ""
            raise Cancelled(
                f"cancelled by the user{during} after {event.done} of {event.total} steps"
            )
