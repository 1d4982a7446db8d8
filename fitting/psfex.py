"""PSFEx models (the ``.psf`` files SExtractor's PSFEx writes) as a PSF image at one position.

A PSFEx model is a binary table (extension 1, column ``PSF_MASK``) holding a cube of
``PSFAXIS3`` basis images of ``PSFAXIS2 x PSFAXIS1`` samples, and a polynomial in the
position on the image the model was built from::

    PSF(x, y) = sum_k  X^i_k Y^j_k  basis[k],   X = (x - POLZERO1) / POLSCAL1,
                                                 Y = (y - POLZERO2) / POLSCAL2

with the terms ordered 1, X, X², ..., Y, XY, ..., Y^d (``POLDEG1`` = d; x, y are SExtractor's
1-based ``X_IMAGE``, ``Y_IMAGE``).  A model without position dependence (``POLNAXIS = 0``) is
its one basis image.  The samples are ``PSF_SAMP`` image pixels apart (0.5: two per pixel), so
the image comes with that step for :func:`galmoss_auto.fitting.psf_scale.match_psf_scale`.

Cutouts rarely say where they were cut from, so the position is given with the PSF (a
manifest's ``psf_x``, ``psf_y``: the galaxy's pixel in the image the model was built on); when
it is not, the model is evaluated at its reference position (POLZERO1, POLZERO2), usually the
centre of that image, and the note says so.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["is_psfex", "psfex_image"]


def is_psfex(path) -> bool:
    """True when ``path`` is a FITS file whose extension 1 is a PSFEx model table."""
    from astropy.io import fits
    try:
        with fits.open(str(path), memmap=False) as hdul:
            return (len(hdul) > 1 and isinstance(hdul[1], fits.BinTableHDU)
                    and "PSF_MASK" in [c.upper() for c in hdul[1].columns.names])
    except Exception:  # not FITS at all: the image reader reports it
        return False


def psfex_image(path, x: float | None = None, y: float | None = None) -> tuple[np.ndarray, float, str]:
    """(PSF image, sampling step in image pixels, note) of the PSFEx model in ``path`` at the
    1-based image position (``x``, ``y``); both None: at the model's reference position.

    Raises ValueError naming the file for models this reader cannot evaluate (context
    variables other than the position, several polynomial groups, inconsistent axes)."""
    from astropy.io import fits
    with fits.open(str(path), memmap=False) as hdul:
        hdr, table = hdul[1].header, hdul[1].data
        cube = np.asarray(table["PSF_MASK"][0], np.float64)
    if (x is None) != (y is None):
        raise ValueError(f"{path}: give both psf_x and psf_y, or neither")
    n_axes = int(hdr.get("POLNAXIS", 0))
    samp = float(hdr.get("PSF_SAMP", 1.0))
    if not (math.isfinite(samp) and samp > 0):
        raise ValueError(f"{path}: PSFEx PSF_SAMP = {samp} must be > 0 (image pixels per sample)")
    shape = tuple(int(hdr.get(f"PSFAXIS{k}", 0)) for k in (3, 2, 1))
    if cube.ndim == 2:
        cube = cube[None]
    if cube.ndim != 3 or (all(shape) and cube.shape != shape):
        raise ValueError(f"{path}: PSFEx basis has shape {cube.shape}, header says {shape}")
    if n_axes == 0:
        return cube[0], samp, f"PSFEx model {path} (constant over the field)"
    names = [str(hdr.get(f"POLNAME{k}", "")).upper() for k in (1, 2)]
    if (n_axes != 2 or int(hdr.get("POLNGRP", 1)) != 1 or not names[0].startswith("X")
            or not names[1].startswith("Y") or not all(n.endswith("IMAGE") for n in names)):
        raise ValueError(f"{path}: PSFEx model depends on {n_axes} context variable(s) "
                         f"{[hdr.get(f'POLNAME{k}') for k in range(1, n_axes + 1)]} in "
                         f"{hdr.get('POLNGRP', 1)} group(s); only X_IMAGE, Y_IMAGE in one group "
                         "can be evaluated")
    deg = int(hdr["POLDEG1"])
    if cube.shape[0] != (deg + 1) * (deg + 2) // 2:
        raise ValueError(f"{path}: PSFEx POLDEG1 = {deg} needs {(deg + 1) * (deg + 2) // 2} basis "
                         f"images, the table has {cube.shape[0]}")
    x0, y0 = float(hdr["POLZERO1"]), float(hdr["POLZERO2"])
    sx, sy = float(hdr["POLSCAL1"]), float(hdr["POLSCAL2"])
    if x is None:
        x, y = x0, y0
        note = (f"PSFEx model {path} evaluated at its reference position ({x0:g}, {y0:g}); "
                "psf_x, psf_y give the galaxy's own")
    else:
        note = f"PSFEx model {path} evaluated at ({float(x):g}, {float(y):g})"
    X, Y = (float(x) - x0) / sx, (float(y) - y0) / sy
    terms = np.array([X ** i * Y ** j for j in range(deg + 1) for i in range(deg + 1 - j)])
    return np.tensordot(terms, cube, axes=(0, 0)), samp, note
