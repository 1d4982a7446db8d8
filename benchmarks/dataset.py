"""The benchmark's galaxies: seeded GalSim Sérsic cutouts with a Moffat PSF, their truth and one
set of sep starting values shared by every tool.

Each cutout is ``size`` x ``size`` pixels (pixel scale 1; all lengths in pixels) of a Sérsic
galaxy convolved with a Moffat PSF (FWHM ``psf_fwhm`` px, beta ``psf_beta``) and integrated over
pixels by GalSim (``method='auto'``).  The PSF handed to the fitters is the *effective* PSF (the
same Moffat drawn with ``method='auto'``, i.e. including the pixel), odd-sized, centred on pixel
(h//2, w//2) and normalised to unit sum, as a PSF measured from stars would be.

Noise: a sky of ``sky`` counts per pixel (subtracted) with gain 1, Poisson on sky + galaxy.  The
sigma map is the true one, sqrt(sky + model), so that all tools see the same weights and the
scatter measures the fitters, not a noise estimate.

Truth (catalog conventions, see :mod:`benchmarks.conventions`), drawn from a seeded generator:
mag uniform in ``mag_range`` (zeropoint ``zeropoint``), r_e log-uniform in ``r_e_range`` (major
axis, px), n log-uniform in ``n_range``, q uniform in ``q_range``, pa uniform in (-90, 90],
centre within +-``center_jitter`` px of the cutout centre.

``components`` > 1 (the scaling sweep's multi-component fits) adds, on the same centre, an
exponential disk (``disk``: n = 1, r_e 2-3.5x the first component's, its own q and a PA within
+-15 deg of it) and then a bar (``bar``: n = 0.5, r_e 1-2x, q 0.2-0.4, PA anywhere); the total
magnitude is the one drawn, split 40/60 (two components) or 30/50/20 (three).  Truth columns are
``<component>_<param>`` with components named as in :data:`COMPONENT_NAMES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from astropy import units as u
from astropy.table import Table

from galmoss_auto.fitting.cutout import Cutout

from .conventions import flux_from_mag, galsim_beta_from_pa, galsim_hlr_from_r_e

__all__ = ["SimConfig", "BenchSet", "simulate", "sep_init_table", "effective_psf", "PARAMS",
           "COMPONENT_NAMES"]

#: Sérsic parameters compared by the benchmark, catalog order.
PARAMS = ("x", "y", "mag", "r_e", "n", "q", "pa")

#: Names of the simulated components, in order (``SimConfig.components`` of them are drawn).
COMPONENT_NAMES = ("sersic", "disk", "bar")

#: Fraction of the total flux in each component, by number of components.
FLUX_SPLIT = {1: (1.0,), 2: (0.4, 0.6), 3: (0.3, 0.5, 0.2)}


@dataclass(frozen=True)
class SimConfig:
    """Simulation settings (see the module docstring for units)."""

    n_galaxies: int = 50
    size: int = 128
    seed: int = 20240605
    zeropoint: float = 25.0
    sky: float = 25.0
    mag_range: tuple[float, float] = (13.5, 16.5)
    r_e_range: tuple[float, float] = (2.5, 12.0)
    n_range: tuple[float, float] = (0.6, 5.0)
    q_range: tuple[float, float] = (0.25, 1.0)
    center_jitter: float = 2.0
    psf_fwhm: float = 3.0
    psf_beta: float = 3.5
    psf_size: int = 25
    components: int = 1

    def __post_init__(self):
        if self.components not in FLUX_SPLIT:
            raise ValueError(f"components must be 1, 2 or 3, got {self.components}")
        if self.n_galaxies < 1:
            raise ValueError(f"n_galaxies must be >= 1, got {self.n_galaxies}")
        if self.size < 16:
            raise ValueError(f"size must be >= 16 px, got {self.size}")
        if self.psf_size % 2 == 0 or self.psf_size < 3:
            raise ValueError(f"psf_size must be odd and >= 3, got {self.psf_size}")
        if not self.sky > 0:
            raise ValueError(f"sky must be > 0 counts, got {self.sky}")
        for name in ("mag_range", "r_e_range", "n_range", "q_range"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"{name}: lower bound {lo} exceeds upper bound {hi}")
        if not (0.3 <= self.n_range[0] and self.n_range[1] <= 6.2):
            raise ValueError(f"n_range must lie in GalSim's [0.3, 6.2], got {self.n_range}")
        if not (0.0 < self.q_range[0] and self.q_range[1] <= 1.0):
            raise ValueError(f"q_range must lie in (0, 1], got {self.q_range}")


@dataclass
class BenchSet:
    """Cutouts, truth and shared initial guesses, same order (row i = cutout i)."""

    config: SimConfig
    cutouts: list[Cutout]
    truth: Table
    init: Table
    psf: np.ndarray
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cutouts)

    def subset(self, n: int) -> "BenchSet":
        """The first ``n`` galaxies (1 <= n <= len(self))."""
        if not 1 <= n <= len(self):
            raise ValueError(f"subset size must be in [1, {len(self)}], got {n}")
        return BenchSet(self.config, self.cutouts[:n], self.truth[:n], self.init[:n], self.psf,
                        dict(self.meta))


def effective_psf(fwhm: float, beta: float, size: int) -> np.ndarray:
    """Moffat PSF convolved with the pixel, sampled at pixel centres on an odd ``size`` grid
    centred on pixel (size//2, size//2), unit sum."""
    import galsim

    psf = galsim.Moffat(beta=beta, fwhm=fwhm)
    img = psf.drawImage(nx=size, ny=size, scale=1.0, method="auto").array.astype(np.float64)
    return img / img.sum()


def _draw_truth(cfg: SimConfig, rng: np.random.Generator) -> Table:
    n = cfg.n_galaxies
    c = (cfg.size + 1) / 2.0

    def log_uniform(lo, hi):
        return np.exp(rng.uniform(math.log(lo), math.log(hi), n))

    pa = 90.0 - rng.uniform(0.0, 180.0, n)   # (-90, 90]
    t = Table()
    t["id"] = [f"sim{i:05d}" for i in range(n)]
    t["sersic_x"] = (c + rng.uniform(-cfg.center_jitter, cfg.center_jitter, n)) * u.pix
    t["sersic_y"] = (c + rng.uniform(-cfg.center_jitter, cfg.center_jitter, n)) * u.pix
    t["sersic_mag"] = rng.uniform(*cfg.mag_range, n) * u.mag
    t["sersic_r_e"] = log_uniform(*cfg.r_e_range) * u.pix
    t["sersic_n"] = log_uniform(*cfg.n_range)
    t["sersic_q"] = rng.uniform(*cfg.q_range, n)
    t["sersic_pa"] = pa * u.deg
    total_mag = t["sersic_mag"].value.copy()
    split = FLUX_SPLIT[cfg.components]
    t["sersic_mag"] = (total_mag - 2.5 * np.log10(split[0])) * u.mag
    # drawn only when used, so that one-component sets keep their random stream
    extra = {"disk": lambda: dict(r_e=rng.uniform(2.0, 3.5, n), n=np.ones(n),
                                  q=rng.uniform(0.3, 1.0, n), pa=pa + rng.uniform(-15.0, 15.0, n)),
             "bar": lambda: dict(r_e=rng.uniform(1.0, 2.0, n), n=np.full(n, 0.5),
                                 q=rng.uniform(0.2, 0.4, n), pa=90.0 - rng.uniform(0.0, 180.0, n))}
    for name, frac in zip(COMPONENT_NAMES[1:cfg.components], split[1:]):
        d = extra[name]()
        t[f"{name}_x"] = t["sersic_x"]
        t[f"{name}_y"] = t["sersic_y"]
        t[f"{name}_mag"] = (total_mag - 2.5 * np.log10(frac)) * u.mag
        t[f"{name}_r_e"] = t["sersic_r_e"] * d["r_e"]
        t[f"{name}_n"] = d["n"]
        t[f"{name}_q"] = d["q"]
        t[f"{name}_pa"] = ((d["pa"] + 90.0) % 180.0 - 90.0) * u.deg
    return t


def _galsim_component(row, name: str, zeropoint: float, gsp):
    """One truth component of ``row`` as a GalSim Sérsic (centred at the origin)."""
    import galsim

    q = float(row[f"{name}_q"])
    gal = galsim.Sersic(n=float(row[f"{name}_n"]),
                        half_light_radius=float(galsim_hlr_from_r_e(row[f"{name}_r_e"], q)),
                        flux=float(flux_from_mag(row[f"{name}_mag"], zeropoint)), gsparams=gsp)
    return gal.shear(q=q, beta=float(galsim_beta_from_pa(row[f"{name}_pa"])) * galsim.degrees)


def simulate(cfg: SimConfig = SimConfig()) -> BenchSet:
    """Draw ``cfg.n_galaxies`` cutouts (GalSim), their truth and sep initial guesses."""
    import galsim

    rng = np.random.default_rng(cfg.seed)
    truth = _draw_truth(cfg, rng)
    psf_obj = galsim.Moffat(beta=cfg.psf_beta, fwhm=cfg.psf_fwhm)
    psf_img = effective_psf(cfg.psf_fwhm, cfg.psf_beta, cfg.psf_size)
    # Large, concentrated galaxies need FFTs beyond GalSim's default 8192 cap.
    gsp = galsim.GSParams(maximum_fft_size=32768)
    cutouts = []
    for row in truth:
        parts = [_galsim_component(row, name, cfg.zeropoint, gsp)
                 for name in COMPONENT_NAMES[:cfg.components]]
        gal = parts[0] if len(parts) == 1 else galsim.Add(parts)
        image = galsim.ImageD(cfg.size, cfg.size, scale=1.0)
        galsim.Convolve(gal, psf_obj, gsparams=gsp).drawImage(
            image, method="auto", center=galsim.PositionD(float(row["sersic_x"]),
                                                          float(row["sersic_y"])))
        model = image.array.astype(np.float64)
        lam = np.clip(model, 0.0, None) + cfg.sky
        data = rng.poisson(lam).astype(np.float64) - cfg.sky
        sigma = np.sqrt(lam)
        cutouts.append(Cutout(id=str(row["id"]), image=data, sigma=sigma, psf=psf_img.copy(),
                              mask=np.zeros(data.shape, bool), zeropoint=cfg.zeropoint,
                              pixel_scale=None, source=f"simulated {row['id']}"))
    init = sep_init_table(cutouts)
    meta = {"generator": f"galsim {galsim.__version__}", "psf": f"Moffat fwhm={cfg.psf_fwhm} "
            f"beta={cfg.psf_beta}", "sky": cfg.sky, "seed": cfg.seed}
    return BenchSet(cfg, cutouts, truth, init, psf_img, meta)


def sep_init_table(cutouts: list[Cutout]) -> Table:
    """The project's sep initializer run on every cutout: columns id, sersic_<param>,
    init_flags.  Every tool starts from these same values."""
    from galmoss_auto.initnet.sep_init import SepInitializer

    init = SepInitializer()
    rows = {f"sersic_{p}": [] for p in PARAMS}
    flags = []
    for c in cutouts:
        res = init(c)
        for p in PARAMS:
            rows[f"sersic_{p}"].append(float(res.params[p]))
        flags.append(int(res.flags))
    t = Table()
    t["id"] = [c.id for c in cutouts]
    for k, v in rows.items():
        t[k] = np.asarray(v)
    t["init_flags"] = np.asarray(flags, dtype=np.int64)
    return t
