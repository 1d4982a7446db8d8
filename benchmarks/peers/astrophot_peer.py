"""AstroPhot (Stone et al. 2023; ``pip install astrophot``) run as its tutorials do.

One ``"sersic galaxy model"`` per cutout on a ``TargetImage`` (pixelscale 1, variance =
sigma^2, mask, the PSF as a ``PSFImage``), started from the shared initial guesses and fitted
with ``ap.fit.LM(model).fit()`` at its defaults (relative tolerance 1e-5, iteration cap
100 x number of parameters, uncertainties from the covariance matrix, which ``fit()``
computes by default).  AstroPhot's default pixel sampling (integration of bright pixels) is
kept: that is how users run it.  Galaxies are fitted one after the other, as in the tutorials.

Conventions (astrophot/models/mixins/transform.py, models/func/sersic.py, image/func): with
pixelscale 1 and the default reference pixel, pixel [0, 0] is centred on (0, 0), so
``center = (x - 1, y - 1)``; ``PA`` is in radians, counter-clockwise from +y (GALFIT's
direction); ``Re`` is along the major axis (R = sqrt(x'^2 + (y'/q)^2)); ``Ie`` is the surface
brightness at Re per pixel area, converted to a total magnitude with the exact Sérsic integral.
A galaxy is "converged" when AstroPhot's message reports success.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from ..conventions import (astrophot_center, astrophot_pa, center_from_astrophot, flux_from_mag,
                           mag_from_flux, pa_from_astrophot, sersic_ie, sersic_total_flux)
from .base import PeerResult, init_arrays, result_table

NAME = "AstroPhot"


def available() -> tuple[bool, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import astrophot
        return True, astrophot.__version__
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


def _build(ap, cutout, g: dict, i: int):
    target = ap.TargetImage(data=cutout.image, pixelscale=1.0, zeropoint=cutout.zeropoint,
                            variance=cutout.sigma ** 2, mask=cutout.mask,
                            psf=ap.PSFImage(data=cutout.psf))
    cx, cy = astrophot_center(g["x"][i], g["y"][i])
    q = float(np.clip(g["q"][i], 0.02, 1.0))     # AstroPhot's valid range is (0.01, 1]
    n = float(np.clip(g["n"][i], 0.37, 7.9))     # and (0.36, 8) for n
    flux = flux_from_mag(g["mag"][i], cutout.zeropoint)
    model = ap.Model(name=f"gal{i}", model_type="sersic galaxy model", target=target,
                     center=[float(cx), float(cy)], q=q, PA=float(astrophot_pa(g["pa"][i])),
                     n=n, Re=float(g["r_e"][i]),
                     Ie=float(sersic_ie(flux, g["r_e"][i], n, q)))
    model.initialize()
    return model


def fit(cutouts, init, *, device: str = "cpu") -> PeerResult:
    """Fit each cutout with AstroPhot's LM from the ``init`` table (catalog conventions)."""
    if not cutouts:
        raise ValueError("no cutouts to fit")
    ok, version = available()
    if not ok:
        raise RuntimeError(f"AstroPhot is not usable: {version}")
    import astrophot as ap

    if device != "cpu":
        ap.config.DEVICE = device
    g = init_arrays(init, len(cutouts))
    keys = ("x", "y", "mag", "r_e", "n", "q", "pa")
    out = {k: np.full(len(cutouts), np.nan) for k in keys}
    converged = np.zeros(len(cutouts), bool)
    wall = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, c in enumerate(cutouts):
            t0 = time.perf_counter()
            try:
                model = _build(ap, c, g, i)
                res = ap.fit.LM(model, verbose=0).fit()
                msg = str(res.message)
            except Exception as exc:  # one failed fit must not stop the benchmark
                wall += time.perf_counter() - t0
                warnings.warn(f"AstroPhot failed on {c.id}: {type(exc).__name__}: {exc}")
                continue
            wall += time.perf_counter() - t0
            v = lambda p: np.asarray(getattr(model, p).value.detach().cpu().numpy(), np.float64)
            x, y = center_from_astrophot(*v("center"))
            re, n, q = float(v("Re")), float(v("n")), float(v("q"))
            out["x"][i], out["y"][i] = x, y
            out["r_e"][i], out["n"][i], out["q"][i] = re, n, q
            out["pa"][i] = pa_from_astrophot(v("PA"))
            out["mag"][i] = mag_from_flux(sersic_total_flux(float(v("Ie")), re, n, q),
                                          c.zeropoint)
            converged[i] = "success" in msg
    settings = {"optimizer": "ap.fit.LM defaults", "errors": "covariance (LM default)",
                "sampling": "AstroPhot default (auto + bright-pixel integration)",
                "batch_size": 1, "device": device}
    return PeerResult(NAME, version, result_table([c.id for c in cutouts], out, converged),
                      wall, settings)
