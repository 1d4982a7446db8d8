"""galmoss-auto: fully automatic, batched, GPU-accelerated galaxy profile fitting.

Subpackages (each a top-level folder of the repository): ``galmoss_auto.fitting`` (the fitter),
``galmoss_auto.automask`` (maskers), ``galmoss_auto.initnet`` (initializers),
``galmoss_auto.pipelines`` (``galmoss-auto run`` and the CLI), ``galmoss_auto.models`` (the model
zoo), ``galmoss_auto.data_scripts`` (simulation and data sets).
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("galmoss-auto")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
