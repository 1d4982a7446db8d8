"""Model components, one profile a file (the GalSim habit)."""

from .base import Component, EllipticalProfile, ParamSpec
from .devaucouleurs import DeVaucouleurs
from .exponential import Exponential
from .ferrers import Ferrers
from .gaussian import Gaussian
from .king import ModifiedKing
from .moffat import Moffat
from .point import PointSource
from .sersic import Sersic
from .sky import FlatSky, TiltedSky

#: GALFIT component names -> classes (used by the model-description readers)
BY_KIND = {cls.kind: cls for cls in (Sersic, DeVaucouleurs, Exponential, Gaussian, Moffat, Ferrers,
                                      ModifiedKing, PointSource, FlatSky, TiltedSky)}

__all__ = ["Component", "EllipticalProfile", "ParamSpec", "Sersic", "DeVaucouleurs", "Exponential",
           "Gaussian", "Moffat", "Ferrers", "ModifiedKing", "PointSource", "FlatSky", "TiltedSky",
           "BY_KIND"]
