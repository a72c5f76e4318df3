"""napari dock widgets: thin layers over the core library.

Each widget is a magicgui ``Container`` that takes the viewer; the four
widgets of one viewer share a :class:`~napari_unet._widgets._session.Session`
(training set, trained models, weight-map settings). napari imports these
modules only when a widget is opened, so reading the manifest stays cheap.
"""
