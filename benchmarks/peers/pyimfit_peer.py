"""PyImfit (Erwin 2015; ``pip install pyimfit``) run as its documentation does.

One Imfit ``Sersic`` per cutout, ``pyimfit.Imfit(model, psf=psf)`` (PSF normalised by Imfit,
default central-pixel subsampling, all threads), ``fit(image, error=sigma,
error_type="sigma", mask=mask, solver="LM")`` with the default ftol 1e-8; errors come with the
LM fit.  Parameter limits, as an Imfit config file would have them: centre +-10 px, ell in
[0, 0.95], n in [0.3, 8], r_e in [0.1, 2 x cutout size] px, I_e in [0, 1e4 x start]; PA free.

Conventions (Imfit manual): X0, Y0 are 1-based like FITS; PA is in degrees counter-clockwise
from +y; ``ell = 1 - b/a``; ``r_e`` is along the major axis; ``I_e`` is the surface brightness at
r_e in counts per pixel, converted to a total magnitude with the exact Sérsic integral.
"converged" is Imfit's ``fitConverged``.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from ..conventions import (flux_from_mag, imfit_ell, mag_from_flux, q_from_imfit_ell, sersic_ie,
                           sersic_total_flux, wrap_pa)
from .base import PeerResult, init_arrays, result_table

NAME = "PyImfit"


def available() -> tuple[bool, str]:
    try:
        import pyimfit
        return True, pyimfit.__version__
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


def _model(pyimfit, g: dict, i: int, size: int, zeropoint: float):
    md = pyimfit.SimpleModelDescription()
    x, y = float(g["x"][i]), float(g["y"][i])
    md.x0.setValue(x, [x - 10.0, x + 10.0])
    md.y0.setValue(y, [y - 10.0, y + 10.0])
    s = pyimfit.make_imfit_function("Sersic", label="sersic")
    q = float(np.clip(g["q"][i], 0.05, 1.0))
    n = float(np.clip(g["n"][i], 0.3, 8.0))
    re = float(np.clip(g["r_e"][i], 0.1, 2.0 * size))
    ie = float(sersic_ie(flux_from_mag(g["mag"][i], zeropoint), re, n, q))
    s.PA.setValue(float(g["pa"][i]))
    s.ell.setValue(float(imfit_ell(q)), [0.0, 0.95])
    s.n.setValue(n, [0.3, 8.0])
    s.I_e.setValue(ie, [0.0, 1e4 * ie])
    s.r_e.setValue(re, [0.1, 2.0 * size])
    md.addFunction(s)
    return md


def fit(cutouts, init, *, device: str = "cpu") -> PeerResult:
    """Fit each cutout with Imfit's LM from the ``init`` table (catalog conventions).
    ``device`` must be "cpu" (Imfit has no GPU path)."""
    if not cutouts:
        raise ValueError("no cutouts to fit")
    ok, version = available()
    if not ok:
        raise RuntimeError(f"PyImfit is not usable: {version}")
    import pyimfit

    g = init_arrays(init, len(cutouts))
    keys = ("x", "y", "mag", "r_e", "n", "q", "pa")
    out = {k: np.full(len(cutouts), np.nan) for k in keys}
    converged = np.zeros(len(cutouts), bool)
    wall = 0.0
    for i, c in enumerate(cutouts):
        t0 = time.perf_counter()
        try:
            md = _model(pyimfit, g, i, max(c.image.shape), c.zeropoint)
            fitter = pyimfit.Imfit(md, psf=c.psf)
            fitter.fit(c.image, error=c.sigma, error_type="sigma", mask=c.mask, solver="LM")
            p = fitter.getRawParameters()
            conv = bool(fitter.fitConverged)
        except Exception as exc:  # one failed fit must not stop the benchmark
            wall += time.perf_counter() - t0
            warnings.warn(f"PyImfit failed on {c.id}: {type(exc).__name__}: {exc}")
            continue
        wall += time.perf_counter() - t0
        # Raw parameter order: X0, Y0, then Sersic's PA, ell, n, I_e, r_e.
        x0, y0, pa, ell, n, ie, re = (float(v) for v in p[:7])
        q = float(q_from_imfit_ell(ell))
        out["x"][i], out["y"][i], out["pa"][i] = x0, y0, wrap_pa(pa)
        out["q"][i], out["n"][i], out["r_e"][i] = q, n, re
        out["mag"][i] = mag_from_flux(sersic_total_flux(ie, re, n, q), c.zeropoint)
        converged[i] = conv
    settings = {"optimizer": "Imfit LM (ftol 1e-8)", "errors": "LM covariance (default)",
                "sampling": "Imfit default central subsampling", "batch_size": 1,
                "device": "cpu"}
    return PeerResult(NAME, version, result_table([c.id for c in cutouts], out, converged),
                      wall, settings)
