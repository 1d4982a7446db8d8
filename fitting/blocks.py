"""Per-galaxy products: GALFIT-style FITS image blocks and PNG panels.

The one writer of each: ``galmoss-auto fit --blocks/--png`` and ``galmoss-auto run
--blocks/--panels`` both call :func:`write_image_blocks` and :func:`plot_panel`, so their files
have the same HDUs and header keywords.

Both take the image dict that :func:`galmoss_auto.fitting.api.model_images` returns for one
cutout: 2-D arrays ``data``, ``model``, ``residual`` (data - model), ``mask`` (True = bad) and one
entry per component (that component alone; PSF-convolved except the sky), plus optionally the
galaxy's catalog row.

Image block layout (as GALFIT's ``imgblock.fits``, with the mask and components added)::

    0  PRIMARY   empty; OBJECT = id
    1  DATA
    2  MODEL     header: COMP_1 = 'bulge', 1_XC, 1_XC_E, 1_MAG, 1_MAG_E, ..., CHI2NU, NITER, FLAGS
    3  RESIDUAL
    4  MASK      uint8, 1 = bad pixel
    5+ COMP_<name>, one per component, in model order

Parameter keywords follow GALFIT's (``<k>_XC``, ``<k>_YC``, ``<k>_MAG``, ``<k>_RE``, ``<k>_N``,
``<k>_AR``, ``<k>_PA``, ...) with k the 1-based component number, as numbers, and the 1-sigma
error in ``<k>_<KEY>_E``; keywords longer than 8 characters are written as HIERARCH cards.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["write_image_blocks", "plot_panel", "component_names", "radial_profile"]

#: image-dict keys that are not components
IMAGE_KEYS = ("data", "model", "residual", "mask")
#: catalog parameter -> GALFIT header keyword stem
GALFIT_KEYS = {"x": "XC", "y": "YC", "mag": "MAG", "r_e": "RE", "r_s": "RS", "n": "N", "q": "AR",
               "pa": "PA", "c0": "C0", "fwhm": "FWHM", "beta": "BETA", "r_out": "ROUT",
               "alpha": "ALPHA", "r_c": "RC", "r_t": "RT", "sky": "SKY", "dsky_dx": "DSDX",
               "dsky_dy": "DSDY"}
#: catalog column -> header keyword, for the fit summary
SUMMARY_KEYS = {"chi2_nu": "CHI2NU", "n_iter": "NITER", "flags": "FLAGS", "n_bad_pixels": "NBADPIX"}


def component_names(images: dict) -> list[str]:
    """The component entries of an image dict, in their order."""
    return [k for k in images if k not in IMAGE_KEYS]


def _row_dict(row) -> dict:
    """Catalog row (astropy Row or mapping) -> {column: plain Python value}."""
    if row is None:
        return {}
    names = row.colnames if hasattr(row, "colnames") else list(row)
    out = {}
    for name in names:
        value = row[name]
        value = getattr(value, "value", value)       # Quantity -> number
        if np.ma.is_masked(value):
            value = math.nan
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bytes):
            value = value.decode()
        out[name] = value
    return out


def _split_columns(row: dict, names: list[str]) -> dict:
    """{component: {param: value}} from ``<component>_<param>`` columns; the longest component
    name that prefixes a column wins (so ``disk_inner_x`` is not read as ``disk``'s)."""
    out = {n: {} for n in names}
    for column, value in row.items():
        owners = [n for n in names if column.startswith(n + "_")]
        if owners:
            owner = max(owners, key=len)
            out[owner][column[len(owner) + 1:]] = value
    return out


def _card(key: str) -> str:
    return key if len(key) <= 8 else f"HIERARCH {key}"


def _fits_value(value):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        # FITS headers cannot hold NaN; GALFIT writes unfitted values as text too
        return float(value) if math.isfinite(value) else "nan"
    return str(value)


def write_image_blocks(path, images: dict, header_info=None, *, model=None) -> Path:
    """Write one galaxy's GALFIT-style multi-extension FITS block (layout: module docstring).

    path : output file (overwritten).
    images : image dict (see module docstring); 2-D arrays of equal shape.
    header_info : the galaxy's catalog row (astropy Row or dict column -> value); its
        ``<component>_<param>`` values (and ``_err``) go into the MODEL header, ``id`` into
        OBJECT, ``chi2_nu``/``n_iter``/``flags``/``n_bad_pixels`` into CHI2NU/NITER/FLAGS/NBADPIX.
    model : optional :class:`~galmoss_auto.fitting.model.Model`, to record each component's
        GALFIT type (``COMPTYPE``) next to its name; with it only the model's parameter columns
        (and their ``_err``) go into the header.
    Returns the path written.
    """
    from astropy.io import fits

    path = Path(path)
    missing = [k for k in ("data", "model", "residual") if k not in images]
    if missing:
        raise KeyError(f"{path}: image dict lacks {missing}; it has {list(images)}")
    shape = np.shape(images["data"])
    for key, arr in images.items():
        if np.shape(arr) != shape:
            raise ValueError(f"{path}: image {key!r} has shape {np.shape(arr)}, data has {shape}")
    row = _row_dict(header_info)
    names = component_names(images)
    kinds = {c.name: c.kind for c in model.components} if model is not None else {}
    if model is not None:
        # only the model's own parameter columns: a catalog's other columns that happen to share
        # a component's prefix (a pipeline's measured sky_level next to a component "sky") are
        # not fitted parameters
        own = {col for col, _, _ in model.catalog_columns}
        row = {k: v for k, v in row.items()
               if k in own or k.removesuffix("_err") in own or k in SUMMARY_KEYS or k == "id"}
    params = _split_columns(row, names)

    primary = fits.PrimaryHDU()
    if "id" in row:
        primary.header["OBJECT"] = (str(row["id"]), "galaxy id (catalog column id)")
    primary.header["CONVENT"] = ("GALFIT", "x,y 1-based; pa deg CCW from +y; q = b/a")
    hdus = [primary, fits.ImageHDU(np.asarray(images["data"], np.float32), name="DATA")]

    model_hdu = fits.ImageHDU(np.asarray(images["model"], np.float32), name="MODEL")
    h = model_hdu.header
    for k, name in enumerate(names, 1):
        h[_card(f"COMP_{k}")] = (name, "component name (catalog prefix)")
        if name in kinds:
            h[_card(f"{k}_TYPE")] = (kinds[name], "GALFIT component type")
        for param, value in params[name].items():
            if param.endswith(("_err", "_arcsec", "_arcsec_err")):
                continue
            stem = GALFIT_KEYS.get(param, param.replace("_", "").upper())
            h[_card(f"{k}_{stem}")] = (_fits_value(value), f"{name}_{param}")
            err = params[name].get(f"{param}_err")
            if err is not None:
                h[_card(f"{k}_{stem}_E")] = (_fits_value(err), f"{name}_{param}_err")
    for column, key in SUMMARY_KEYS.items():
        if column in row:
            h[key] = (_fits_value(row[column]), column)
    hdus.append(model_hdu)
    hdus.append(fits.ImageHDU(np.asarray(images["residual"], np.float32), name="RESIDUAL"))
    if "mask" in images:
        hdus.append(fits.ImageHDU(np.asarray(images["mask"], bool).astype(np.uint8), name="MASK"))
    for name in names:
        comp = fits.ImageHDU(np.asarray(images[name], np.float32), name=f"COMP_{name}"[:68])
        comp.header["COMPNAME"] = name
        if name in kinds:
            comp.header["COMPTYPE"] = kinds[name]
        hdus.append(comp)
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


# ---------------------------------------------------------------------------------------------
# PNG panel
# ---------------------------------------------------------------------------------------------
def _geometry(row: dict, names: list[str], shape) -> tuple[float, float, float, float]:
    """(x, y, q, pa) for the annuli: the first component with a centre (and shape, if any);
    the image centre and circles without a row."""
    params = _split_columns(row, names) if row else {}
    for name in names + [n for n in params if n not in names]:
        p = params.get(name, {})
        x, y = p.get("x"), p.get("y")
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y):
            q, pa = p.get("q", 1.0), p.get("pa", 0.0)
            q = q if q is not None and math.isfinite(q) and q > 0 else 1.0
            pa = pa if pa is not None and math.isfinite(pa) else 0.0
            return float(x), float(y), float(q), float(pa)
    h, w = shape
    return (w + 1) / 2.0, (h + 1) / 2.0, 1.0, 0.0


def elliptical_radius(shape, x: float, y: float, q: float, pa_deg: float) -> np.ndarray:
    """Major-axis radius (pixels) of every pixel on ellipses centred on 1-based (x, y), axis
    ratio q in (0, 1], pa in degrees CCW from +y (GALFIT)."""
    rows, cols = np.indices(shape, dtype=np.float64)
    return point_elliptical_radius(cols + 1.0, rows + 1.0, x, y, q, pa_deg)


def point_elliptical_radius(px, py, x: float, y: float, q: float, pa_deg: float):
    """Major-axis radius (pixels) of the points (``px``, ``py``) on the ellipses centred on
    (``x``, ``y``) (all 1-based), axis ratio ``q`` in (0, 1], ``pa`` in degrees CCW from +y;
    scalars or arrays that broadcast."""
    dx, dy = np.asarray(px, np.float64) - x, np.asarray(py, np.float64) - y
    t = np.radians(pa_deg)
    along = -dx * np.sin(t) + dy * np.cos(t)      # major axis points at pa from +y
    across = dx * np.cos(t) + dy * np.sin(t)
    return np.hypot(along, across / q)


def radial_profile(image, mask, radius, edges):
    """Mean, its standard error and pixel count of ``image`` in annuli ``edges`` (pixels),
    unmasked pixels only.  Empty annuli give NaN."""
    good = ~np.asarray(mask, bool) & np.isfinite(image)
    which = np.digitize(radius[good], edges) - 1
    values = np.asarray(image, np.float64)[good]
    n_bins = len(edges) - 1
    inside = (which >= 0) & (which < n_bins)
    count = np.bincount(which[inside], minlength=n_bins).astype(float)
    total = np.bincount(which[inside], values[inside], minlength=n_bins)
    total2 = np.bincount(which[inside], values[inside] ** 2, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        var = np.clip(total2 / count - mean ** 2, 0, None)
        sem = np.sqrt(var / np.maximum(count - 1, 1))
    return mean, sem, count


def _noise(values: np.ndarray) -> float:
    """Robust standard deviation (1.4826 MAD); 1 when undefined."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 1.0
    mad = 1.4826 * np.median(np.abs(values - np.median(values)))
    return float(mad) if mad > 0 else float(np.std(values)) or 1.0


def plot_panel(path, images: dict, row=None, title: str | None = None, *, dpi: int = 100) -> Path:
    """Write a PNG: data, model, residual and the radial profile of one galaxy.

    Data and model share one asinh stretch (softened at the residual's noise level, so the
    faint outskirts and the core are both visible); the residual is linear, ±5 noise, with a
    diverging map.  Masked pixels are grey.  The profile is the mean in elliptical annuli
    (log-spaced in the major-axis radius) around the row's first component (x, y, q, pa), or the
    image centre in circles without a row; data with standard errors, the model and each
    component as lines, on unmasked pixels only.
    """
    # a bare Figure renders with Agg and leaves pyplot's global backend and state alone
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    path = Path(path)
    data = np.asarray(images["data"], np.float64)
    model = np.asarray(images["model"], np.float64)
    residual = np.asarray(images.get("residual", data - model), np.float64)
    mask = np.asarray(images.get("mask", np.zeros(data.shape, bool)), bool)
    rowd = _row_dict(row)
    names = component_names(images)
    good = ~mask & np.isfinite(data)

    noise = _noise(residual[good]) if good.any() else 1.0
    soft = noise
    lo = np.nanpercentile(data[good], 1) if good.any() else -noise
    hi = max(np.nanpercentile(data[good], 99.9) if good.any() else noise, np.nanmax(model)
             if np.isfinite(model).any() else noise)

    def stretch(a):
        return np.arcsinh(a / soft)

    vmin, vmax = stretch(min(lo, -noise)), stretch(max(hi, 5 * noise))
    grey = colormaps["magma"].with_extremes(bad="0.6")
    div = colormaps["RdBu_r"].with_extremes(bad="0.6")

    fig = Figure(figsize=(15, 3.9))
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1, 1.25]})
    extent = (0.5, data.shape[1] + 0.5, 0.5, data.shape[0] + 0.5)   # 1-based pixel centres
    panels = ((data, "data", grey, vmin, vmax, stretch), (model, "model", grey, vmin, vmax, stretch),
              (residual, "residual (data - model)", div, -5 * noise, 5 * noise, lambda a: a))
    for ax, (img, label, cmap, a, b, f) in zip(axes, panels):
        shown = np.ma.array(f(img), mask=mask | ~np.isfinite(img))
        im = ax.imshow(shown, origin="lower", cmap=cmap, vmin=a, vmax=b, extent=extent,
                       interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("x [pix]")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03,
                     label="asinh(I / noise)" if f is stretch else "image units")
    axes[0].set_ylabel("y [pix]")

    x0, y0, q, pa = _geometry(rowd, names, data.shape)
    radius = elliptical_radius(data.shape, x0, y0, q, pa)
    r_max = max(float(radius[good].max()) if good.any() else 2.0, 2.0)
    edges = np.concatenate([[0.0], np.geomspace(0.75, r_max, 24)])
    centres = np.concatenate([[0.375], np.sqrt(edges[1:-1] * edges[2:])])
    ax = axes[3]
    mean, sem, count = radial_profile(data, mask, radius, edges)
    ok = count > 0
    ax.errorbar(centres[ok], mean[ok], yerr=sem[ok], fmt="o", ms=3, color="k", label="data")
    m_mean, _, _ = radial_profile(model, mask, radius, edges)
    ax.plot(centres[ok], m_mean[ok], "-", color="C3", lw=1.8, label="model")
    for k, name in enumerate(names):
        c_mean, _, _ = radial_profile(np.asarray(images[name], np.float64), mask, radius, edges)
        ax.plot(centres[ok], c_mean[ok], "--", color=f"C{k % 9}", lw=1, label=name)
    ax.set_xscale("log")
    # linear only within the noise of an outer annulus' mean, logarithmic above: the profile's
    # decades stay readable and sky-level (possibly negative) points stay on the plot
    linthresh = max(noise / math.sqrt(max(float(np.median(count[ok])), 1.0)), 1e-30) if ok.any() else 1.0
    ax.set_yscale("symlog", linthresh=linthresh, linscale=1.0)
    ax.set_ylim(bottom=-3 * linthresh)
    ax.axhline(0, color="0.7", lw=0.5)
    ax.set_xlabel(f"major-axis radius [pix]  (q={q:.2f}, pa={pa:.0f}°)")
    ax.set_ylabel("mean intensity per pixel")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("elliptical-annulus profile", fontsize=10)

    if title is None and rowd:
        bits = [str(rowd.get("id", ""))]
        if "chi2_nu" in rowd:
            bits.append(f"chi2_nu = {rowd['chi2_nu']:.3g}")
        if "flags" in rowd:
            bits.append(f"flags = {rowd['flags']}")
        title = "   ".join(b for b in bits if b)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
