"""Contaminants of a cutout: neighbouring galaxies (including overlapping blends and objects cut
by the cutout edge), stars, and optionally a bright star's halo, bad columns and cosmic rays.

How many of each kind a cutout gets follows a *count spec*, configurable per kind:

* a number ``lam``            -> Poisson(lam);
* ``[low, high]``             -> uniform integer in [low, high];
* ``{"poisson": lam}`` / ``{"uniform": [low, high]}`` / ``{"fixed": k}``;
* ``None`` (galaxies, stars)  -> Poisson with mean = preset density (per arcmin^2, brighter than
  depth + 0.5) x the area of the cutout plus its margin.

Galaxies and stars are placed uniformly over the cutout enlarged by ``margin`` (fraction of the
size) on each side, so some are cut by the edge; a ``blend`` is a galaxy placed on top of the
central one (0.3-2 times the sum of the half-light radii away), drawn with probability
``blend_prob``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .populations import draw_magnitudes, draw_sersic, pop_value

__all__ = ["ContaminantConfig", "draw_count", "draw_contaminants", "ASTRO_KINDS", "ARTIFACT_KINDS"]

ASTRO_KINDS = ("galaxy", "blend", "star", "bright_star")
ARTIFACT_KINDS = ("bad_column", "cosmic_ray")


@dataclass(frozen=True)
class ContaminantConfig:
    """Count specs per kind (see module docstring) and placement settings.

    ``artifacts`` switches on bright-star halos, bad columns and cosmic rays.
    """

    galaxy: object = None
    star: object = None
    blend_prob: float = 0.3
    margin: float = 0.1
    artifacts: bool = False
    bright_star_prob: float = 0.1
    bad_column: object = 0.15
    cosmic_ray: object = 1.0
    counts: dict = field(default_factory=dict)

    def __post_init__(self):
        if not 0 <= self.blend_prob <= 1:
            raise ValueError(f"blend_prob must be in [0, 1], got {self.blend_prob}")
        if not 0 <= self.bright_star_prob <= 1:
            raise ValueError(f"bright_star_prob must be in [0, 1], got {self.bright_star_prob}")
        if not 0 <= self.margin <= 1:
            raise ValueError(f"margin must be in [0, 1] (fraction of the cutout size), got {self.margin}")
        for kind in ("galaxy", "star", "bad_column", "cosmic_ray"):
            spec = getattr(self, kind)
            if spec is not None:
                draw_count(np.random.default_rng(0), spec, kind)  # validates the spec


def draw_count(rng: np.random.Generator, spec, kind: str = "count") -> int:
    """Draw a count from a spec (see module docstring)."""
    if isinstance(spec, dict):
        if len(spec) != 1:
            raise ValueError(f"{kind}: count spec dict needs exactly one of poisson/uniform/fixed, got {spec}")
        (name, value), = spec.items()
        if name == "poisson":
            spec = float(value)
        elif name == "uniform":
            spec = list(value)
        elif name == "fixed":
            if int(value) < 0:
                raise ValueError(f"{kind}: fixed count must be >= 0, got {value}")
            return int(value)
        else:
            raise ValueError(f"{kind}: unknown count distribution {name!r} (poisson, uniform, fixed)")
    if isinstance(spec, (list, tuple)):
        if len(spec) != 2 or int(spec[0]) < 0 or int(spec[1]) < int(spec[0]):
            raise ValueError(f"{kind}: uniform count spec must be [low, high] with 0 <= low <= high, got {spec}")
        return int(rng.integers(int(spec[0]), int(spec[1]) + 1))
    lam = float(spec)
    if not lam >= 0:
        raise ValueError(f"{kind}: Poisson mean must be >= 0, got {lam}")
    return int(rng.poisson(lam))


def _galaxy(rng, survey, band, kind, x, y, mag_lo, mag_hi, size):
    pop = survey.population
    b = survey.band(band)
    m_ref = float(draw_magnitudes(rng, mag_lo - b.colour, mag_hi - b.colour, pop_value(pop, "count_slope")))
    shape = draw_sersic(rng, pop, m_ref, survey.pixel_scale, max_r_e=size / 4.0)
    shape.pop("early")
    return {"kind": kind, "x": x, "y": y, "mag": m_ref + b.colour, **shape}


def _star(kind, x, y, mag):
    return {"kind": kind, "x": x, "y": y, "mag": mag, "r_e": 0.0, "r_e_arcsec": 0.0,
            "n": math.nan, "q": math.nan, "pa": math.nan}


def _artifact(kind, x, y, rows, cols, values, mode):
    return {"mode": mode, "kind": kind, "x": x, "y": y, "mag": math.nan, "r_e": math.nan, "r_e_arcsec": math.nan,
            "n": math.nan, "q": math.nan, "pa": math.nan,
            "pixels": (np.asarray(rows, int), np.asarray(cols, int), np.asarray(values, float))}


def draw_contaminants(rng: np.random.Generator, survey, band: str, size: int, central: dict,
                      cfg: ContaminantConfig, sky_sigma: float, sky_level: float) -> list[dict]:
    """Contaminants of one cutout, in label order (galaxies, blend, stars, bright star, artifacts).

    Each is a dict with kind, x, y (1-based px), mag, r_e (px, major), r_e_arcsec, n, q, pa (deg);
    stars have r_e = 0 and NaN shape; artifacts carry ``pixels`` = (rows, cols, values) (0-based
    indices) that are set (``mode`` "set": dead/hot columns) or added ("add": cosmic-ray charge) in
    the noisy image, and NaN photometry; they are not part of the noiseless model.
    """
    b = survey.band(band)
    pop = survey.population
    mag_bright = pop_value(pop, "mag_range")[0] + b.colour - 1.0
    mag_faint = b.depth + 0.5
    margin = cfg.margin * size
    lo, hi = 0.5 - margin, size + 0.5 + margin  # pixel edges of the enlarged area
    area = ((hi - lo) * survey.pixel_scale / 60.0) ** 2  # arcmin^2
    out = []
    spec = cfg.counts.get("galaxy", cfg.galaxy)
    n_gal = draw_count(rng, spec if spec is not None else pop_value(pop, "galaxy_density") * area, "galaxy")
    for _ in range(n_gal):
        x, y = rng.uniform(lo, hi, 2)
        out.append(_galaxy(rng, survey, band, "galaxy", x, y, mag_bright, mag_faint, size))
    if rng.random() < cfg.blend_prob:
        host = central["components"][central["host"]]
        sep = float(rng.uniform(0.3, 2.0))
        angle = rng.uniform(0, 2 * np.pi)
        # a blend is no brighter than 1 mag above the central and no fainter than the depth
        obj = _galaxy(rng, survey, band, "blend", 0.0, 0.0, central["total_mag"] - 1.0,
                      max(central["total_mag"] + 3.0, central["total_mag"] + 0.5), size)
        dist = sep * (host["r_e"] + obj["r_e"]) + 1.0
        obj["x"] = host["x"] + dist * math.cos(angle)
        obj["y"] = host["y"] + dist * math.sin(angle)
        out.append(obj)
    spec = cfg.counts.get("star", cfg.star)
    n_star = draw_count(rng, spec if spec is not None else pop_value(pop, "star_density") * area, "star")
    star_mags = draw_magnitudes(rng, mag_bright, mag_faint, pop_value(pop, "star_slope"), n_star)
    for m in np.atleast_1d(star_mags)[:n_star]:
        x, y = rng.uniform(lo, hi, 2)
        out.append(_star("star", x, y, float(m)))
    if not cfg.artifacts:
        return out
    if rng.random() < cfg.bright_star_prob:
        # just outside the cutout: only the halo reaches in, as in real survey cutouts
        side = int(rng.integers(4))
        along = rng.uniform(0.5, size + 0.5)
        away = rng.uniform(5.0, 0.4 * size)
        x, y = [(0.5 - away, along), (size + 0.5 + away, along),
                (along, 0.5 - away), (along, size + 0.5 + away)][side]
        out.append(_star("bright_star", float(x), float(y), float(mag_bright - rng.uniform(3.0, 6.0))))
    for _ in range(draw_count(rng, cfg.counts.get("bad_column", cfg.bad_column), "bad_column")):
        col = int(rng.integers(size))
        start = int(rng.integers(0, size // 2)) if rng.random() < 0.5 else 0
        rows = np.arange(start, size)
        # dead: no charge (reads minus the subtracted sky); hot: a constant excess
        value = -sky_level if rng.random() < 0.5 else float(rng.uniform(10, 100)) * sky_sigma
        out.append(_artifact("bad_column", col + 1.0, (start + size + 1) / 2.0, rows, np.full(rows.size, col),
                             np.full(rows.size, value), "set"))
    for _ in range(draw_count(rng, cfg.counts.get("cosmic_ray", cfg.cosmic_ray), "cosmic_ray")):
        length = int(rng.integers(1, 16))
        angle = rng.uniform(0, np.pi)
        r0, c0 = rng.uniform(0, size, 2)
        t = np.arange(length)
        rows = np.clip(np.round(r0 + t * math.sin(angle)).astype(int), 0, size - 1)
        cols = np.clip(np.round(c0 + t * math.cos(angle)).astype(int), 0, size - 1)
        rc = np.unique(np.stack([rows, cols], 1), axis=0)
        values = rng.uniform(20, 300, len(rc)) * sky_sigma
        out.append(_artifact("cosmic_ray", float(rc[:, 1].mean() + 1), float(rc[:, 0].mean() + 1),
                             rc[:, 0], rc[:, 1], values, "add"))
    return out
