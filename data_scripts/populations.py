"""Galaxy populations: joint draws of magnitude, size, Sersic index, axis ratio and angle, and the
GalSim profile of a drawn galaxy (single Sersic, bulge + disk, optional substructure).

Distributions (all overridable in a preset's ``[population]`` table; values are approximate
and meant to *look like* a survey, not to be a cosmological model):

* magnitude: power-law number counts N(m) ~ 10^(count_slope m) between ``mag_range``
  (reference band; SDSS r slope ~0.45, Yasuda et al. 2001, AJ 122, 1104);
* size: log-normal at fixed magnitude; median log10 r_e[arcsec] = log10(size_r0)
  - size_slope (m - 18), flattening to size_slope_faint beyond size_break; early types
  ``early_offset`` dex smaller; scatter ``size_scatter`` dex.  Slopes and scatter of the order
  of the apparent-magnitude form of Shen et al. 2003 (MNRAS 343, 978) for SDSS;
* Sersic index: bimodal (Blanton et al. 2003, ApJ 594, 186): late types log-normal around
  n = 1, early types around n = 4; the early-type fraction falls from ``early_fraction[0]`` at the
  bright end of ``mag_range`` to ``early_fraction[1]`` at the faint end;
* axis ratio q = b/a: late types ~ uniform in [0.15, 1], early types Beta-distributed with mean
  ~0.7 in [0.3, 1] (shapes after Padilla & Strauss 2008, MNRAS 388, 1321);
* bulge + disk: B/T ~ Beta(1.2, 2.5), bulge r_e = (0.15-0.6) x disk r_e, bulge n around 3
  (ranges as in Simard et al. 2011, ApJS 196, 11; Meert et al. 2015, MNRAS 446, 3943).

Sersic indices are rounded to a logarithmic grid n = 0.5 * 2^(k/27) (2.6 % steps, 0.5 <= n <=
5.88; n = 1, 2, 4 lie on it): GalSim computes a costly table for every new n and keeps the last
100 per process, so a grid of 97 values keeps every table cached.  The truth table holds the
gridded value, i.e. exactly what was drawn.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["DEFAULTS", "N_MIN", "N_MAX", "snap_n", "draw_magnitudes", "draw_sersic",
           "draw_central", "galaxy_profile", "component_flux"]

DEFAULTS = {
    "mag_range": [14.0, 21.0],
    "count_slope": 0.45,
    "size_r0": 1.6,            # arcsec, median r_e of a late type at m_ref = 18
    "size_slope": 0.14,        # dex/mag
    "size_slope_faint": 0.06,
    "size_break": 20.0,
    "size_scatter": 0.2,       # dex
    "early_offset": -0.1,      # dex
    "early_fraction": [0.5, 0.2],
    "star_density": 0.6,       # per arcmin^2 brighter than depth + 0.5
    "galaxy_density": 4.0,
    "star_slope": 0.15,        # dlog10 N/dm of star counts at high latitude (approximate)
}

_N_STEPS = 27
N_MIN = 0.5
N_MAX = N_MIN * 2.0 ** (96 / _N_STEPS)


def snap_n(n: float) -> float:
    """Round a Sersic index to the grid 0.5 * 2^(k/27), k = 0..96 (see module docstring)."""
    k = round(_N_STEPS * math.log2(max(float(n), N_MIN) / N_MIN))
    return N_MIN * 2.0 ** (min(max(k, 0), 96) / _N_STEPS)


def pop_value(pop: dict, key: str):
    return pop.get(key, DEFAULTS[key])


def draw_magnitudes(rng: np.random.Generator, lo: float, hi: float, slope: float, size=None):
    """Magnitudes with N(m) dm ~ 10^(slope m) dm on [lo, hi] (inverse-CDF draw)."""
    if not hi > lo:
        raise ValueError(f"magnitude range must have hi > lo, got [{lo}, {hi}]")
    u = rng.random(size)
    if slope == 0:
        return lo + u * (hi - lo)
    a, b = 10.0 ** (slope * lo), 10.0 ** (slope * hi)
    return np.log10(a + u * (b - a)) / slope


def _median_log_size(pop: dict, m_ref: float, early: bool) -> float:
    brk = pop_value(pop, "size_break")
    bright = min(m_ref, brk) - 18.0
    faint = max(m_ref - brk, 0.0)
    value = (math.log10(pop_value(pop, "size_r0")) - pop_value(pop, "size_slope") * bright
             - pop_value(pop, "size_slope_faint") * faint)
    return value + (pop_value(pop, "early_offset") if early else 0.0)


def draw_sersic(rng: np.random.Generator, pop: dict, m_ref: float, pixel_scale: float,
                max_r_e: float, early: bool | None = None) -> dict:
    """Shape of one single-Sersic galaxy of reference-band magnitude ``m_ref``.

    Returns r_e (px, major axis, <= ``max_r_e``), r_e_arcsec, n, q, pa (deg, from +y, in (-90, 90])
    and ``early`` (bool).  Sizes above ``max_r_e`` are redrawn (a cutout is sized to its galaxy).
    """
    lo, hi = pop_value(pop, "mag_range")
    if early is None:
        f0, f1 = pop_value(pop, "early_fraction")
        t = min(max((m_ref - lo) / (hi - lo), 0.0), 1.0)
        early = bool(rng.random() < f0 + (f1 - f0) * t)
    if early:
        n = snap_n(min(max(4.0 * math.exp(rng.normal(0, 0.2)), 2.0), N_MAX))
        q = 0.3 + 0.7 * float(rng.beta(4.0, 2.0))
    else:
        n = snap_n(min(max(1.0 * math.exp(rng.normal(0, 0.3)), N_MIN), 2.5))
        q = float(rng.uniform(0.15, 1.0))
    mu = _median_log_size(pop, m_ref, early)
    for _ in range(100):
        r_e_arcsec = 10.0 ** (mu + pop_value(pop, "size_scatter") * rng.normal())
        r_e = r_e_arcsec / pixel_scale
        if r_e <= max_r_e:
            break
    else:
        r_e = max_r_e
    r_e = max(r_e, 0.3)  # below ~0.3 px every profile is a point source
    pa = wrap_pa(rng.uniform(-90.0, 90.0))
    return {"r_e": r_e, "r_e_arcsec": r_e * pixel_scale, "n": n, "q": q, "pa": pa, "early": early}


def wrap_pa(pa: float) -> float:
    """Wrap an angle in degrees to (-90, 90]."""
    pa = (float(pa) + 90.0) % 180.0 - 90.0
    return 90.0 if pa == -90.0 else pa


def draw_central(rng: np.random.Generator, survey, band: str, population: str, size: int,
                 centre_jitter: float, substructure: bool) -> dict:
    """The central galaxy: {"model", "components": {name: {x, y, mag, r_e, r_e_arcsec, n, q, pa}},
    "total_mag", "bt", "substructure": {...}}.  Positions are 1-based pixel coordinates near the
    cutout centre ((size + 1) / 2), offset by a Gaussian of ``centre_jitter`` px truncated at 3 sigma."""
    pop = survey.population
    b = survey.band(band)
    zp, ps = survey.zeropoint, survey.pixel_scale
    lo, hi = pop_value(pop, "mag_range")
    m_ref = float(draw_magnitudes(rng, lo, hi, pop_value(pop, "count_slope")))
    mag = m_ref + b.colour
    off = np.clip(rng.normal(0.0, centre_jitter, 2), -3 * centre_jitter, 3 * centre_jitter)
    x, y = (size + 1) / 2.0 + off[0], (size + 1) / 2.0 + off[1]
    max_r_e = size / 6.0
    if population == "mixed":
        model = "bulge_disk" if rng.random() < 0.5 else "sersic"
    elif population in ("sersic", "bulge_disk"):
        model = population
    else:
        raise ValueError(f"population must be 'sersic', 'bulge_disk' or 'mixed', got {population!r}")
    if model == "sersic":
        shape = draw_sersic(rng, pop, m_ref, ps, max_r_e)
        shape.pop("early")
        comps = {"sersic": {"x": x, "y": y, "mag": mag, **shape}}
        bt = math.nan  # a single profile has no bulge/disk split
        host = "sersic"
    else:
        bt = float(rng.beta(1.2, 2.5))
        disk = draw_sersic(rng, pop, m_ref, ps, max_r_e, early=False)
        disk.pop("early")
        disk["n"] = 1.0
        bulge_re = max(disk["r_e"] * float(rng.uniform(0.15, 0.6)), 0.3)
        bq = float(rng.uniform(0.5, 1.0))
        comps = {
            "bulge": {"x": x, "y": y, "mag": mag - 2.5 * math.log10(bt),
                      "r_e": bulge_re, "r_e_arcsec": bulge_re * ps,
                      "n": snap_n(min(max(3.0 * math.exp(rng.normal(0, 0.25)), 1.5), N_MAX)),
                      "q": bq, "pa": wrap_pa(disk["pa"] + rng.normal(0.0, 10.0))},
            "disk": {"x": x, "y": y, "mag": mag - 2.5 * math.log10(1.0 - bt), **disk},
        }
        host = "disk"
    sub = {"kind": "", "frac": 0.0}
    if substructure and comps[host]["n"] <= 2.5 and comps[host]["r_e"] >= 2.0:
        sub = _draw_substructure(rng, comps[host])
    return {"model": model, "components": comps, "total_mag": mag, "bt": bt, "host": host,
            "substructure": sub}


def _draw_substructure(rng: np.random.Generator, host: dict) -> dict:
    """Perturbations of a disk-like component: star-forming clumps, two-armed spiral-like
    arms and/or a bar, each with probability 1/2 (at least one).  Fractions are of the host's flux."""
    kinds = [k for k in ("clumps", "spiral", "bar") if rng.random() < 0.5] or \
        [("clumps", "spiral", "bar")[int(rng.integers(3))]]
    sub = {"kind": "+".join(kinds), "frac": 0.0, "seed": int(rng.integers(1, 2 ** 31 - 1))}
    if "clumps" in kinds:
        sub["clumps"] = {"n": int(rng.integers(5, 30)), "frac": float(rng.uniform(0.05, 0.2))}
    if "spiral" in kinds:
        sub["spiral"] = {"frac": float(rng.uniform(0.1, 0.3)), "arms": int(rng.choice([2, 2, 3])),
                         "pitch": float(rng.uniform(10.0, 30.0)), "phase": float(rng.uniform(0, 2 * np.pi))}
    if "bar" in kinds:
        sub["bar"] = {"frac": float(rng.uniform(0.05, 0.15)), "length": float(rng.uniform(0.4, 0.9)),
                      "q": float(rng.uniform(0.2, 0.35)), "pa": wrap_pa(host["pa"] + rng.uniform(-60, 60))}
    sub["frac"] = sum(sub[k]["frac"] for k in kinds)
    return sub


def component_flux(mag: float, zeropoint: float) -> float:
    """Total flux in image units of a component of magnitude ``mag``."""
    return 10.0 ** (-0.4 * (mag - zeropoint))


def sersic_profile(comp: dict, flux: float):
    """A GalSim Sersic of the catalog parameters (pixel units), centred at the origin.

    GalSim's half_light_radius is the circularised one and its shear keeps the area, so
    hlr = r_e(major) * sqrt(q); its beta is counted from +x, GALFIT's pa from +y: beta = pa + 90.
    """
    import galsim  # imported here so that the draws above work without GalSim (an optional extra)
    from .psf import GSPARAMS

    hlr = comp["r_e"] * math.sqrt(comp["q"])
    prof = galsim.Sersic(n=comp["n"], half_light_radius=hlr, flux=flux, gsparams=GSPARAMS)
    return prof.shear(q=comp["q"], beta=(comp["pa"] + 90.0) * galsim.degrees)


def _spiral_profile(host: dict, flux: float, spec: dict):
    """Logarithmic arms: the host's Sersic light times max(cos(m(theta - ln r / tan p) + phase), 0)^2,
    off inside 0.3 r_e, sampled at 0.5 px in the galaxy's frame and handed to GalSim as an
    InterpolatedImage of total ``flux``."""
    import galsim
    from .psf import GSPARAMS

    q, r_e = host["q"], host["r_e"]
    half = int(math.ceil(min(4.0 * r_e, 96.0)))
    step = 0.5
    u = np.arange(-half, half + step / 2, step)
    xx, yy = np.meshgrid(u, u)
    beta = math.radians(host["pa"] + 90.0)
    # rotate into the major-axis frame, then undo the area-preserving shear
    xm = xx * math.cos(beta) + yy * math.sin(beta)
    ym = -xx * math.sin(beta) + yy * math.cos(beta)
    xs, ys = xm * math.sqrt(q), ym / math.sqrt(q)
    hlr = r_e * math.sqrt(q)
    r = np.hypot(xs, ys) + 1e-6
    theta = np.arctan2(ys, xs)
    n = host["n"]
    bn = 2.0 * n - 1.0 / 3.0 + 0.009876 / n  # Prugniel & Simien 1997 approximation, fine for a shape
    light = np.exp(-bn * (r / hlr) ** (1.0 / n))
    arms = np.cos(spec["arms"] * (theta - np.log(r / hlr) / math.tan(math.radians(spec["pitch"])))
                  + spec["phase"])
    pattern = light * np.clip(arms, 0.0, None) ** 2 * (1.0 - np.exp(-(r / (0.3 * r_e)) ** 4))
    return galsim.InterpolatedImage(galsim.Image(pattern, scale=step), flux=flux, gsparams=GSPARAMS)


def galaxy_profile(galaxy: dict, zeropoint: float):
    """GalSim profile (pixel units, centred at the origin, before PSF) of a drawn galaxy.

    Substructure takes its flux from the host component, so each component's total flux stays
    10^(-0.4 (mag - zp)): clumps are GalSim RandomKnots with the host's half-light radius, the bar a
    flat (n = 0.5) elongated Sersic, the arms as in :func:`_spiral_profile`.
    """
    import galsim
    from .psf import GSPARAMS

    parts = []
    sub = galaxy.get("substructure") or {"frac": 0.0}
    for name, comp in galaxy["components"].items():
        flux = component_flux(comp["mag"], zeropoint)
        if name != galaxy.get("host") or not sub.get("kind"):
            parts.append(sersic_profile(comp, flux))
            continue
        parts.append(sersic_profile(comp, flux * (1.0 - sub["frac"])))
        shear = dict(q=comp["q"], beta=(comp["pa"] + 90.0) * galsim.degrees)
        if "clumps" in sub:
            knots = galsim.RandomKnots(sub["clumps"]["n"], half_light_radius=comp["r_e"] * math.sqrt(comp["q"]),
                                       flux=flux * sub["clumps"]["frac"], rng=galsim.BaseDeviate(sub["seed"]),
                                       gsparams=GSPARAMS)
            parts.append(knots.shear(**shear))
        if "bar" in sub:
            bar = sub["bar"]
            length = bar["length"] * comp["r_e"]
            prof = galsim.Sersic(n=0.5, half_light_radius=length * math.sqrt(bar["q"]),
                                 flux=flux * bar["frac"], gsparams=GSPARAMS)
            parts.append(prof.shear(q=bar["q"], beta=(bar["pa"] + 90.0) * galsim.degrees))
        if "spiral" in sub:
            parts.append(_spiral_profile(comp, flux * sub["spiral"]["frac"], sub["spiral"]))
    return parts[0] if len(parts) == 1 else galsim.Add(parts, gsparams=GSPARAMS)
