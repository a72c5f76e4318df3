"""The npe2 manifest is registered under the distribution name, valid, and imports little."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from npe2 import PluginManifest

DISTRIBUTION = "napari-unet-cells"


def test_manifest_is_registered_and_valid():
    # Not "napari-unet": that name belongs to an unrelated project on PyPI, and napari
    # skips a second plugin whose manifest has the same name.
    manifest = PluginManifest.from_distribution(DISTRIBUTION)
    assert manifest.name == DISTRIBUTION
    assert manifest.display_name == "U-Net"
    assert manifest.contributions.commands
    for command in manifest.contributions.commands:
        assert command.id.startswith(DISTRIBUTION + "."), command.id
    manifest.validate_imports()


def test_manifest_entry_point_is_named_after_the_distribution():
    entry_points = metadata.distribution(DISTRIBUTION).entry_points
    manifests = [ep for ep in entry_points if ep.group == "napari.manifest"]
    assert [(ep.name, ep.value) for ep in manifests] == [(DISTRIBUTION, "napari_unet:napari.yaml")]
    scripts = [ep for ep in entry_points if ep.group == "console_scripts"]
    assert [(ep.name, ep.value) for ep in scripts] == [("napari-unet", "napari_unet.cli:main")]


def test_importing_the_package_does_not_load_torch():
    # napari imports the package to find napari.yaml: that must stay fast.
    code = "import sys, napari_unet; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
