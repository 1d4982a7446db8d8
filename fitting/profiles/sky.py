"""Sky background, not convolved with the PSF (as in GALFIT).

FlatSky: ``sky`` (image units per pixel).  TiltedSky: ``sky`` at the image centre plus
``dsky_dx``, ``dsky_dy`` (image units per pixel per pixel), GALFIT's ``sky`` component.
"""

import math

from .base import Component, ParamSpec

SKY = ParamSpec("sky", "sky", -math.inf, math.inf, "", "background level per pixel")
DSKY_DX = ParamSpec("dsky_dx", "sky", -math.inf, math.inf, "", "background gradient along x")
DSKY_DY = ParamSpec("dsky_dy", "sky", -math.inf, math.inf, "", "background gradient along y")


class FlatSky(Component):
    kind = "sky"
    convolved = False
    param_specs = (SKY,)

    def __init__(self, name: str | None = None):
        super().__init__(name or "sky")


class TiltedSky(Component):
    kind = "tiltedsky"
    convolved = False
    param_specs = (SKY, DSKY_DX, DSKY_DY)

    def __init__(self, name: str | None = None):
        super().__init__(name or "sky")
