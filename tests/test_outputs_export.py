"""Exported packages are written atomically: old package kept, crash leftovers cleanable."""

from __future__ import annotations

import time
import zipfile

import pytest
import torch

from napari_unet import export
from napari_unet.errors import OutputError
from napari_unet.models import UNet
from napari_unet.outputs import TMP_SUFFIX, remove_orphans

pytest.importorskip("yaml")


def _model():
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=4, dropout=0.0).eval()
    return net, {"classes": ["background", "cell"]}


def test_interrupted_export_keeps_the_previous_package_and_leaves_cleanable_names(
    tmp_path, monkeypatch
):
    out = tmp_path / "m.zip"
    export.export_bioimageio(_model(), out, validate=False, weights=("pytorch_state_dict",))
    before = out.read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    # As after a SIGKILL: no clean-up runs, the temporaries stay.
    monkeypatch.setattr(export.bioimageio, "_remove", lambda path: None)
    monkeypatch.setattr(export.bioimageio, "_zip_folder", killed)
    with pytest.raises(KeyboardInterrupt):
        export.export_bioimageio(
            _model(), out, validate=False, overwrite=True, weights=("pytorch_state_dict",)
        )
    assert out.read_bytes() == before
    assert zipfile.is_zipfile(out)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != "m.zip")
    assert leftovers and all(name.endswith(TMP_SUFFIX) for name in leftovers), leftovers
    remove_orphans(tmp_path, older_than=time.time() + 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zip"]


def test_export_refuses_a_link_at_the_output_name(tmp_path):
    out = tmp_path / "m.zip"
    out.symlink_to(tmp_path / "elsewhere.zip")
    with pytest.raises(OutputError, match="symbolic link"):
        export.export_bioimageio(_model(), out, validate=False, overwrite=True)
    assert not (tmp_path / "elsewhere.zip").exists()
