"""galmoss_auto.fitting: the batched profile-fitting engine.

Public API: :func:`fit` (cutouts + initial guesses + model -> catalog), :class:`Model` and the
profile classes, :func:`read_cutout` / :class:`Cutout` for data, :func:`model_images` for image
blocks, :class:`Flag` for the catalog's ``flags`` column.  Conventions: see
:mod:`galmoss_auto.fitting.conventions`.
"""

# The top-level folder is installed as galmoss_auto.fitting; importing it under its bare name
# would make a second copy of every module (and of every registry in them).
if __name__ != "galmoss_auto.fitting":
    raise ImportError(f"import this package as galmoss_auto.fitting (pip install -e .), not as {__name__!r}")


from .api import fit, model_images
from .catalog import bad_input_rows, write_catalog
from .cutout import Cutout, CutoutError, read_cutout
from .flags import Flag
from .lm import LMSettings
from .adam import AdamSettings
from .model import Model, Tie, default_model
from .profiles import (DeVaucouleurs, Exponential, Ferrers, FlatSky, Gaussian, ModifiedKing, Moffat,
                       PointSource, Sersic, TiltedSky)
from .render import RenderConfig
from .tensor_render import render_batch

__all__ = ["fit", "model_images", "bad_input_rows", "write_catalog", "Cutout", "CutoutError",
           "read_cutout", "Flag", "LMSettings", "AdamSettings", "Model", "Tie", "default_model",
           "DeVaucouleurs", "Exponential", "Ferrers", "FlatSky", "Gaussian", "ModifiedKing", "Moffat",
           "PointSource", "Sersic", "TiltedSky", "RenderConfig", "render_batch"]
