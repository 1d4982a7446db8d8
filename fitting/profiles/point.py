"""Point source: the PSF itself, scaled to a total magnitude.

Parameters: x, y (1-based pixels in the catalog), mag.  Needs a PSF.
"""

from .base import MAG, Component, position_specs


class PointSource(Component):
    """GALFIT's ``psf``."""

    kind = "psf"
    point_like = True

    def __init__(self, name: str | None = None):
        super().__init__(name or "psf")
        self.param_specs = (*position_specs(), MAG)
