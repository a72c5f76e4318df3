"""The npe2 manifest is registered, valid, and imports nothing heavy."""

from __future__ import annotations

import subprocess
import sys

from npe2 import PluginManifest


def test_manifest_is_registered_and_valid():
    manifest = PluginManifest.from_distribution("napari-unet")
    assert manifest.name == "napari-unet"
    assert manifest.display_name == "U-Net"
    manifest.validate_imports()


def test_importing_the_package_does_not_load_torch():
    # napari imports the package to find napari.yaml: that must stay fast.
    code = "import sys, napari_unet; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
