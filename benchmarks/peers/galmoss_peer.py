"""GalMOSS (Chen et al. 2024; ``pip install galmoss``) run as its tutorial does.

Settings follow GalMOSS's "easiest start" tutorial: one Sérsic, ``pa`` with ``angle=True``,
``ser_n`` fitted in log, ``mag`` with ``M0`` = zeropoint, no value ranges, the default DiffGrad
optimizer with its default step length 0.015, ``iteration=1000`` (the docstring recommends
1,000-1,500) and the default early stop (relative chi^2 change < 1e-5 for 50 iterations).
Its covariance-matrix errors (``fitting.uncertainty(method="covar_mat")``) are optional (see
``fit``).  All cutouts form one
batch (its batching is the point of GalMOSS).  GalMOSS reads FITS files, so the cutouts are
written to a temporary folder first (not timed); reading them is part of its timed fit.

Conventions (galmoss/profile/basic.py, fitting.py): pixel j (0-based) has grid coordinate
j + 0.5 along x, and rows likewise along y, so ``cen = catalog - 0.5``; its ``pa`` has GALFIT's
zero-point and direction; ``eff_r`` is along the major axis; the PSF is applied by
``conv2d(padding='same')`` (a correlation: the symmetric benchmark PSF is unaffected).
A galaxy is "converged" when it met the early-stop criterion before the iteration limit.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..conventions import center_from_galmoss, galmoss_center, wrap_pa
from .base import PeerResult, init_arrays, result_table

NAME = "GalMOSS"


def available() -> tuple[bool, str]:
    try:
        os.environ.setdefault("TQDM_DISABLE", "1")
        import galmoss
        return True, getattr(galmoss, "__version__", "?")
    except Exception as exc:  # missing deps (torch_optimizer, pandas, h5py) show up here
        return False, f"{type(exc).__name__}: {exc}"


def _write_fits(cutouts, folder: Path) -> tuple[list[str], list[str], list[str]]:
    from astropy.io import fits

    paths = ([], [], [])
    for c in cutouts:
        for kind, arr, lst in (("image", c.image, paths[0]), ("sigma", c.sigma, paths[1]),
                               ("psf", c.psf, paths[2])):
            p = folder / f"{c.id}_{kind}.fits"
            fits.PrimaryHDU(np.asarray(arr, dtype=np.float32)).writeto(p, overwrite=True)
            lst.append(str(p))
    return paths


def _make_fitting_class():
    import torch
    from galmoss import Fitting

    class TracedFitting(Fitting):
        """GalMOSS's Fitting, remembering each batch's early-stop counters (convergence)."""

        def detect_update(self, fitting_metrics, chi_mu, iter):
            update, metrics = super().detect_update(fitting_metrics, chi_mu, iter)
            self._last_stop_count = metrics[0].detach().clone()
            return update, metrics

        def append_param_best_value(self):
            super().append_param_best_value()
            done = (self._last_stop_count >= self.early_stop).cpu()
            prev = getattr(self, "converged_mask", torch.zeros(0, dtype=torch.bool))
            self.converged_mask = torch.cat((prev, done))

    return TracedFitting


def fit(cutouts, init, *, device: str = "cpu", iterations: int = 1000, batch_size: int | None = None,
        errors: str = "none") -> PeerResult:
    """Fit ``cutouts`` with GalMOSS from the ``init`` table (catalog conventions).

    iterations : GalMOSS's iteration cap (>= 1; tutorial 1000).
    batch_size : galaxies per batch (default: all).
    errors : "none" (default) or "covariance" (GalMOSS covar_mat, timed with the fit).  On a
        CPU its covar_mat builds a dense (H*W)^2 weight matrix per galaxy (2 GB at 128^2) and
        takes ~30 s per galaxy, so it is off by default: the peer is timed *without* errors,
        which only flatters it.
    """
    if errors not in ("covariance", "none"):
        raise ValueError(f"GalMOSS errors must be 'covariance' or 'none', got {errors!r}")
    if not cutouts:
        raise ValueError("no cutouts to fit")
    if len({c.image.shape for c in cutouts}) != 1:
        raise ValueError("GalMOSS needs all cutouts of one size in a run")
    ok, version = available()
    if not ok:
        raise RuntimeError(f"GalMOSS is not usable: {version}")
    import torch
    import galmoss as gm
    import galmoss.fitting as gm_fitting

    gm_fitting.tqdm = lambda it, *a, **k: it  # its per-iteration progress bar floods the table

    n = len(cutouts)
    g = init_arrays(init, n)
    cx, cy = galmoss_center(g["x"], g["y"])
    zp = float(cutouts[0].zeropoint)
    if any(c.zeropoint != zp for c in cutouts):
        raise ValueError("GalMOSS takes one magnitude zeropoint (M0) per run")
    with tempfile.TemporaryDirectory(prefix="bench_galmoss_") as tmp:
        img, sig, psf = _write_fits(cutouts, Path(tmp))
        t64 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))
        sersic = gm.lp.Sersic(
            cen_x=gm.p(t64(cx)), cen_y=gm.p(t64(cy)),
            pa=gm.p(t64(wrap_pa(g["pa"])), angle=True),
            axis_r=gm.p(t64(np.clip(g["q"], 0.05, 1.0))),
            eff_r=gm.p(t64(g["r_e"])),
            ser_n=gm.p(t64(g["n"]), log=True),
            mag=gm.p(t64(g["mag"]), M0=zp))
        dataset = gm.DataSet(galaxy_index=[c.id for c in cutouts], image_path=img,
                             sigma_path=sig, psf_path=psf, device=device)
        dataset.define_profiles(sersic=sersic)
        fitting = _make_fitting_class()(dataset=dataset, batch_size=batch_size or n,
                                        iteration=int(iterations))
        # GalMOSS prints status lines after each stage; keep them out of the benchmark table.
        with contextlib.redirect_stdout(io.StringIO()):
            t0 = time.perf_counter()
            fitting.fit()
            t_fit = time.perf_counter() - t0
            if errors == "covariance":
                fitting.uncertainty(method="covar_mat")
            wall = time.perf_counter() - t0

    def best(p):
        return np.asarray(p.total_best_value_numpy, dtype=np.float64).reshape(-1)

    x, y = center_from_galmoss(best(sersic.cen_x), best(sersic.cen_y))
    vals = {"x": x, "y": y, "mag": best(sersic.mag), "r_e": best(sersic.eff_r),
            "n": best(sersic.ser_n), "q": best(sersic.axis_r), "pa": wrap_pa(best(sersic.pa))}
    # GalMOSS lets q run past 1 (the major axis then lies along pa + 90); fold it back.
    flip = vals["q"] > 1.0
    vals["r_e"] = np.where(flip, vals["r_e"] * vals["q"], vals["r_e"])
    vals["pa"] = np.where(flip, wrap_pa(vals["pa"] + 90.0), vals["pa"])
    vals["q"] = np.where(flip, 1.0 / vals["q"], np.abs(vals["q"]))
    converged = fitting.converged_mask.numpy()
    settings = {"optimizer": "DiffGrad (torch_optimizer), lr 0.015", "iterations": int(iterations),
                "early_stop": "rel. chi2 change < 1e-5 for 50 iterations",
                "batch_size": batch_size or n, "errors": errors, "dtype": "float32",
                "device": device, "fit_s": t_fit, "errors_s": wall - t_fit}
    return PeerResult(NAME, version, result_table([c.id for c in cutouts], vals, converged),
                      wall, settings)
