"""`napari-unet info` names the distribution that owns `napari_unet`, and a clash is loud."""

from __future__ import annotations

from importlib import metadata

import napari_unet
from napari_unet.cli import main
from napari_unet.distribution import DISTRIBUTION, installation_report, owning_distributions


def test_this_project_owns_the_import_package():
    # The test environment installs the project (pip install -e ".[testing]").
    assert owning_distributions() == [(DISTRIBUTION, metadata.version(DISTRIBUTION))]
    assert metadata.version(DISTRIBUTION) == napari_unet.__version__


def test_info_without_a_model_names_the_owning_distribution(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"distribution:   {DISTRIBUTION} {napari_unet.__version__}" in out
    assert f"napari_unet {napari_unet.__version__} from " in out
    assert "WARNING" not in out


def _install_fake_distribution(folder, name: str, version: str) -> None:
    """A dist-info as pip leaves it, declaring the top-level package napari_unet."""
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "top_level.txt").write_text("napari_unet\n")


def test_info_warns_loudly_when_the_unrelated_napari_unet_is_installed_too(
    tmp_path, monkeypatch, capsys
):
    _install_fake_distribution(tmp_path, "napari-unet", "1.0.0")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert ("napari-unet", "1.0.0") in owning_distributions()
    assert main(["info"]) == 1
    out = capsys.readouterr().out
    assert "napari-unet 1.0.0" in out
    assert "WARNING: napari_unet is claimed by napari-unet, not only by napari-unet-cells" in out
    assert "pip uninstall -y napari-unet napari-unet-cells" in out


def test_report_for_a_source_tree_that_is_not_installed():
    report, ok = installation_report([])
    assert ok
    assert "not installed" in report and f"pip install {DISTRIBUTION}" in report
