"""Per-galaxy image products of a run: FITS image blocks and PNG panels.

The model images come from the fitter's one renderer
(:func:`galmoss_auto.fitting.model_images`) and are written by the fitter's one block and panel
writers (:func:`galmoss_auto.fitting.blocks.write_image_blocks`,
:func:`galmoss_auto.fitting.blocks.plot_panel`), the same ones ``galmoss-auto fit`` uses, so
``run --blocks`` and ``fit --blocks`` write the same HDUs and header keywords.

* block ``blocks/<id>.fits``: PRIMARY (OBJECT = id), DATA, MODEL (fitted parameters and their
  errors as GALFIT-style keywords ``<k>_MAG``, ``<k>_MAG_E`` ..., CHI2NU, NITER, FLAGS),
  RESIDUAL, MASK (1 = excluded from the fit), then one COMP_<name> per model component.
* panel ``panels/<id>.png``: data, model, residual and the elliptical-annulus profile.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["render_products", "safe_name"]


def safe_name(gid: str) -> str:
    """A file name for a galaxy id: characters other than letters, digits, ``-_.`` become ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(gid))


def render_products(prepared, table, out_dir, blocks: bool, n_panels: int, model=None,
                    device=None) -> int:
    """Blocks for all ``prepared`` galaxies (if ``blocks``) and panels for the first
    ``n_panels`` (>= 0); returns the number of panels written."""
    if not prepared or not (blocks or n_panels > 0):
        return 0
    from galmoss_auto.fitting import default_model, model_images
    from galmoss_auto.fitting.blocks import plot_panel, write_image_blocks
    model = model or default_model()
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
            write_image_blocks(out_dir / "blocks" / f"{safe_name(g.id)}.fits", imgs, rows[g.id], model=model)
        if panels < n_panels:
            (out_dir / "panels").mkdir(exist_ok=True)
            plot_panel(out_dir / "panels" / f"{safe_name(g.id)}.png", imgs, rows[g.id])
            panels += 1
    return panels
