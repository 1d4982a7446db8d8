"""What ``galmoss-auto run INPUT`` accepts: the records of :mod:`galmoss_auto.fitting.records`
(one reader for ``fit`` and ``run``), plus the hash that ties an output directory to its input.

INPUT is a manifest (``.csv``, ``.ecsv``, ``.fits`` table with ``id, image[, sigma|weight|
variance, psf, mask, zeropoint, pixel_scale, gain, saturation, psf_oversampling, psf_x,
psf_y]``), a directory of FITS cutouts or a glob.  Each cutout's own extensions (``SIGMA``,
``PSF``, ``MASK``, ...) and header (zero-point, pixel scale, ``SATURATE``, gain) come before
the run's defaults (``--psf``, ``--zeropoint``, ``--pixel-scale``, ``--gain``,
``--saturation``, then the ``--survey`` preset); see
:func:`galmoss_auto.fitting.cutout.read_record`.
"""

from __future__ import annotations

import hashlib
import json

from galmoss_auto.fitting.records import (COMPANIONS, MANIFEST_SUFFIXES, InputError, apply_defaults,
                                          check_unique, read_inputs, read_manifest,
                                          records_from_files)

__all__ = ["InputError", "read_inputs", "read_manifest", "records_from_files", "apply_defaults",
           "check_unique", "inputs_hash", "MANIFEST_SUFFIXES", "COMPANIONS"]


def inputs_hash(records: list[dict]) -> str:
    """sha256 (hex) of what the records say: ids, absolute paths, per-row values, sources,
    defaults and row errors, in order.  The manifest's own path is not part of it, so the same
    manifest given by another path hashes the same; an edited cell changes it."""
    h = hashlib.sha256()
    for rec in records:
        h.update(json.dumps(rec, sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()
