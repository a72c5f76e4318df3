"""Which installed distribution provides the ``napari_unet`` import package.

This project is distributed as ``napari-unet-cells``. An unrelated project, the
``napari-unet`` distribution on PyPI (a TensorFlow plugin), installs an import
package of the same name, ``napari_unet``: with both installed, one overwrites
the other's files and napari loads only one of the two plugins. This module
names the distribution(s) that claim ``napari_unet`` so such a clash is seen
at once (``napari-unet info`` with no arguments prints it).
"""

from __future__ import annotations

from importlib import metadata

__all__ = ["DISTRIBUTION", "IMPORT_NAME", "installation_report", "owning_distributions"]

#: This project's distribution name (PyPI, pip, the npe2 manifest).
DISTRIBUTION = "napari-unet-cells"
#: The import package, shared with the unrelated ``napari-unet`` distribution.
IMPORT_NAME = "napari_unet"


def owning_distributions(import_name: str = IMPORT_NAME) -> list[tuple[str, str]]:
    """The installed distributions that provide an import package.

    Parameters
    ----------
    import_name : str, optional
        A top-level import name.

    Returns
    -------
    owners : list of (str, str)
        ``(distribution name, version)`` for each distribution that declares
        ``import_name``, sorted by name; empty when it is imported from a source
        tree that is not installed (e.g. through ``PYTHONPATH``).

    Examples
    --------
    >>> owning_distributions("no_such_package_anywhere")
    []
    """
    names = sorted(set(metadata.packages_distributions().get(import_name, [])))
    owners = []
    for name in names:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:  # metadata without a version: say so
            version = "unknown version"
        owners.append((name, version))
    return owners


def installation_report(owners: list[tuple[str, str]] | None = None) -> tuple[str, bool]:
    """Say which distribution owns ``napari_unet``, and warn loudly about a clash.

    Parameters
    ----------
    owners : list of (str, str), optional
        ``(distribution, version)`` pairs; by default
        :func:`owning_distributions`.

    Returns
    -------
    report : str
        Lines for a person: the imported package (version and folder) and the
        distribution(s) that own it, with a warning and the fix where it is not
        exactly one ``napari-unet-cells``.
    ok : bool
        False where another distribution (such as the unrelated ``napari-unet``)
        claims the import package.

    Examples
    --------
    >>> report, ok = installation_report([("napari-unet-cells", "0.1.0")])
    >>> ok
    True
    >>> clash = [("napari-unet", "1.0.0"), ("napari-unet-cells", "0.1.0")]
    >>> report, ok = installation_report(clash)
    >>> ok, "napari-unet 1.0.0" in report
    (False, True)
    """
    import napari_unet

    if owners is None:
        owners = owning_distributions()
    where = next(iter(getattr(napari_unet, "__path__", [])), "?")
    lines = [f"import package: {IMPORT_NAME} {napari_unet.__version__} from {where}"]
    if not owners:
        lines.append(
            f"distribution:   none (imported from a source tree, not installed; "
            f"install it with: pip install {DISTRIBUTION})"
        )
        return "\n".join(lines), True
    listed = ", ".join(f"{name} {version}" for name, version in owners)
    lines.append(f"distribution:   {listed}")
    foreign = [name for name, _ in owners if name != DISTRIBUTION]
    if not foreign:
        return "\n".join(lines), True
    lines += [
        "",
        f"WARNING: {IMPORT_NAME} is claimed by {', '.join(foreign)}, not only by {DISTRIBUTION}.",
        "The 'napari-unet' distribution on PyPI is an unrelated project that installs the same",
        "import name; installed together, one overwrites the other's files. Fix:",
        f"    pip uninstall -y {' '.join(foreign)} {DISTRIBUTION}",
        f"    pip install {DISTRIBUTION}    (from a clone: pip install -e .)",
    ]
    return "\n".join(lines), False
