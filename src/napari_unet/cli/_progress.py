"""Progress bars on stderr for the commands (tqdm; nothing with --quiet)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


class ProgressBar:
    """A tqdm bar on stderr for training and segmentation events, or nothing when quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None
        self.stage: str | None = None

    def _bar(self, stage: str, total: int, unit: str, desc: str) -> Any:
        if self.quiet:
            return None
        if self.bar is None or self.stage != stage or self.bar.total != total:
            from tqdm import tqdm

            self.close()
            self.bar = tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, leave=True)
            self.stage = stage
        return self.bar

    def train_event(self, event: Any) -> None:
        """A ``progress`` callback for :func:`napari_unet.training.train`."""
        if event.stage == "validate":
            return  # short; the next iteration's bar update shows the metrics
        unit = "image" if event.stage == "prepare" else "it"
        desc = "weight maps" if event.stage == "prepare" else "train"
        bar = self._bar(event.stage, event.total, unit, desc)
        if bar is None:
            return
        bar.update(event.done - bar.n)
        if event.stage == "train":
            info = event.info
            shown = {"loss": f"{info['loss']:.4f}"}
            for key in ("val_loss", "pixel_error", "rand_error"):
                if key in info:
                    shown[key] = f"{info[key]:.4f}"
            bar.set_postfix(shown, refresh=False)

    def segment_event(self, desc: str) -> Callable[[Any], None]:
        """A ``progress`` callback for :func:`napari_unet.segment.segment`: a bar of tiles."""

        def update(event: Any) -> None:
            if event.stage != "predict":
                return
            bar = self._bar(desc, event.total, "tile", desc)
            if bar is not None:
                bar.update(event.done - bar.n)

        return update

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def dask_bar(what: str) -> Any:
    """A Dask progress bar on stderr, titled ``what`` (local schedulers only)."""
    from dask.diagnostics import ProgressBar as DaskProgressBar

    print(what, file=sys.stderr, flush=True)
    return DaskProgressBar(out=sys.stderr)
