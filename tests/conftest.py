"""Shared fixtures: paths to the real data beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _require(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(
            f"real data not found at {path}: these tests need the shared data set "
            "(ISBI 2012 / DSB2018) checked out beside the repository as ../shared/data"
        )
    return path


@pytest.fixture(scope="session")
def isbi2012() -> Path:
    """``../shared/data/isbi2012`` (images/ and labels/ slice_NN.png), or skip."""
    return _require(SHARED_DATA / "isbi2012")


@pytest.fixture(scope="session")
def dsb2018() -> Path:
    """``../shared/data/dsb2018`` (images/<id>.png, labels/<id>.tif), or skip."""
    return _require(SHARED_DATA / "dsb2018")


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Exported models (inference.py) go to a temporary cache, never the user's."""
    import os

    os.environ["NAPARI_UNET_CACHE_DIR"] = str(tmp_path_factory.mktemp("napari-unet-cache"))
