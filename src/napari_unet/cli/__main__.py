"""``python -m napari_unet.cli`` (and ``torchrun ... -m napari_unet.cli train``)."""

import sys

from . import main

sys.exit(main())
