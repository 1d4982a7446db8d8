"""The model zoo: per-survey/band network checkpoints, hash-checked, never pickled.

* :mod:`.checkpoint` -- safetensors files with the registry entry embedded (``save_checkpoint``,
  ``load_checkpoint``, ``read_entry``).
* :mod:`.registry` -- shipped registry, user cache (``$GALMOSS_AUTO_HOME``) and zoo folders
  (``write_zoo_entry``, ``catalogue``, ``find``, ``add_shipped``).
* :mod:`.download` -- streamed, locked, sha256-checked downloads into the cache.
* :mod:`.resolve` -- which checkpoint a stage uses (``resolve_checkpoint``) and whether it suits
  the cutouts (``check_compatibility``).
* :mod:`.build` -- the network an entry describes (``build_model``) and reference outputs.
* :mod:`.cli` -- ``galmoss-auto weights``.
"""

# The top-level folder is installed as galmoss_auto.models; importing it under its bare name
# would make a second copy of every module (and of every registry in them).
if __name__ != "galmoss_auto.models":
    raise ImportError(f"import this package as galmoss_auto.models (pip install -e .), not as {__name__!r}")

from .build import build_model, check_reference, make_reference
from .checkpoint import (CheckpointError, ChecksumError, load_checkpoint, read_entry, save_checkpoint,
                         sha256_file)
from .download import DownloadError, download
from .registry import (RegistryError, add_shipped, catalogue, find, home, read_registry, remove_shipped,
                       write_registry, write_zoo_entry)
from .resolve import (CompatibilityError, ResolveError, ResolvedCheckpoint, check_compatibility,
                      require_compatible, resolve_checkpoint)

__all__ = [
    "save_checkpoint", "load_checkpoint", "read_entry", "sha256_file", "CheckpointError", "ChecksumError",
    "write_zoo_entry", "catalogue", "find", "home", "read_registry", "write_registry", "add_shipped",
    "remove_shipped", "RegistryError", "download", "DownloadError", "resolve_checkpoint",
    "ResolvedCheckpoint", "ResolveError", "check_compatibility", "require_compatible",
    "CompatibilityError", "build_model", "make_reference", "check_reference",
]
