"""Per-galaxy image products of a run: FITS image blocks and PNG panels.

The model images come from the fitter's one renderer
(:func:`galmoss_auto.fitting.model_images`); this module only writes them out.

* block ``blocks/<id>.fits``: HDUs DATA, MODEL, RESIDUAL, MASK (1 = excluded from the fit),
  then one per model component, like GALFIT's image blocks; the primary header carries the
  fitted parameters.
* panel ``panels/<id>.png``: data, model and residual (same asinh stretch for data and model,
  residual in units of sigma), mask hatched in grey, fitted values in the title.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["render_products", "write_block", "write_panel", "safe_name"]


def safe_name(gid: str) -> str:
    """A file name for a galaxy id: characters other than letters, digits, ``-_.`` become ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(gid))


def write_block(path, images: dict, row) -> Path:
    """One FITS file with the data, model, residual, mask and component images."""
    from astropy.io import fits
    primary = fits.PrimaryHDU()
    for name in row.colnames:
        value = row[name]
        if name.startswith("sersic_") and not name.endswith("_err") and np.isscalar(value):
            key = ("S_" + name[7:].replace("_", "")).upper()[:8]
            primary.header[key] = (float(value), name)
    primary.header["GALID"] = (str(row["id"])[:68], "catalog id")
    hdus = [primary]
    for name, arr in images.items():
        data = np.asarray(arr, np.uint8 if name == "mask" else np.float32)
        hdus.append(fits.ImageHDU(data, name=name.upper()))
    path = Path(path)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def write_panel(path, images: dict, row, sigma: np.ndarray | None) -> Path:
    """Data | model | residual/sigma PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data, model, mask = images["data"], images["model"], np.asarray(images["mask"], bool)
    good = data[~mask]
    scale = max(float(np.percentile(np.abs(good - np.median(good)), 68)), 1e-30) if good.size else 1.0
    stretch = lambda a: np.arcsinh(a / scale)  # noqa: E731
    lo, hi = np.percentile(stretch(good), [1, 99.8]) if good.size else (0, 1)
    resid = images["residual"] / (sigma if sigma is not None else 1.0)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    for ax, img, title, kw in ((axes[0], stretch(data), "data", {"vmin": lo, "vmax": hi}),
                               (axes[1], stretch(model), "model", {"vmin": lo, "vmax": hi}),
                               (axes[2], resid, "residual / sigma", {"vmin": -5, "vmax": 5, "cmap": "RdBu_r"})):
        ax.imshow(img, origin="lower", interpolation="nearest", **({"cmap": "gray_r"} | kw))
        ax.imshow(np.ma.masked_where(~mask, mask), origin="lower", cmap="Greys", alpha=0.35,
                  vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    vals = " ".join(f"{p}={float(row[f'sersic_{p}']):.3g}" for p in ("mag", "r_e", "n", "q", "pa")
                    if f"sersic_{p}" in row.colnames)
    fig.suptitle(f"{row['id']}  {vals}  chi2_nu={float(row['chi2_nu']):.2f}  flags={int(row['flags'])}",
                 fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def render_products(prepared, table, out_dir, blocks: bool, n_panels: int, model=None,
                    device=None) -> int:
    """Blocks for all ``prepared`` galaxies (if ``blocks``) and panels for the first
    ``n_panels`` (>= 0); returns the number of panels written."""
    if not prepared or not (blocks or n_panels > 0):
        return 0
    from galmoss_auto.fitting import model_images
    chosen = prepared if blocks else prepared[:n_panels]
    rows = {str(r["id"]): r for r in table}
    ok = [g for g in chosen if np.isfinite(float(rows[g.id]["chi2_nu"]))]
    if not ok:
        return 0
    sub = table[[list(map(str, table["id"])).index(g.id) for g in ok]]
    images = model_images([g.cutout for g in ok], sub, model, device=device)
    out_dir = Path(out_dir)
    panels = 0
    for g, imgs in zip(ok, images):
        if blocks:
            (out_dir / "blocks").mkdir(exist_ok=True)
            write_block(out_dir / "blocks" / f"{safe_name(g.id)}.fits", imgs, rows[g.id])
        if panels < n_panels:
            (out_dir / "panels").mkdir(exist_ok=True)
            write_panel(out_dir / "panels" / f"{safe_name(g.id)}.png", imgs, rows[g.id], g.cutout.sigma)
            panels += 1
    return panels
