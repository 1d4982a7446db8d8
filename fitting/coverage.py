"""How much of a fitted component's light falls on its cutout.

A Sérsic fitted to a faint, extended galaxy can trade its index, its size and the sky against
each other, and the χ² barely tells them apart: on simulated stamps a disc of mag 17.5 and
r_e 15 px in a 96 px cutout came back with n 7, r_e 4700 px and mag 12.0, χ²_ν 1.00, and only
informational flags.  Such a fit's magnitude is not measured: almost all of its light is modelled
beyond the cutout, where there are no data, and the number extrapolates the profile.  The same
holds, less drastically, for a galaxy too big for its cutout.

So the fitter renders each target component alone (PSF-convolved, as fitted) and compares the
light that lands on the cutout's own pixels with the component's total flux: below
:data:`MIN_LIGHT_ON_CUTOUT` the row is flagged LIGHT_OFF_CUTOUT.  The limit is one half: a
component whose half-light ellipse does not fit inside the cutout.  Masked pixels count as on
the cutout (they are inside it; the mask does not move the galaxy's light), fitted neighbours
and the sky are not judged, nor point sources (their light is the PSF's).
"""

from __future__ import annotations

import torch

__all__ = ["light_on_cutout", "MIN_LIGHT_ON_CUTOUT"]

#: Least fraction of a target component's total flux that must fall on the cutout.
MIN_LIGHT_ON_CUTOUT = 0.5


def light_on_cutout(problem, full: torch.Tensor) -> torch.Tensor:
    """(B, K) float64: for each of the model's K judged components (the extended, convolved
    components that are not auxiliary, in model order; K may be 0), the fraction of its total
    flux that the fitted parameters ``full`` (B, P, internal) put on each cutout's own pixels."""
    model = problem.model
    judged = [c for c in model.components
              if c.elliptical and c.convolved and c.name not in model.auxiliary]
    B = full.shape[0]
    if not judged:
        return torch.zeros((B, 0), dtype=torch.float64, device=full.device)
    H, W = problem.canvas.shape
    rows = torch.arange(H, device=problem.device)[None, :, None]
    cols = torch.arange(W, device=problem.device)[None, None, :]
    heights = torch.tensor([c.shape[0] for c in problem.cutouts], device=problem.device)[:, None, None]
    widths = torch.tensor([c.shape[1] for c in problem.cutouts], device=problem.device)[:, None, None]
    own = (rows < heights) & (cols < widths)          # a smaller cutout's padding is not its own
    sub = problem.subset()
    natural = model.natural(full)
    zeropoint = problem.zeropoint.to(torch.float64)
    out = []
    with torch.no_grad():
        for comp in judged:
            image = problem.model_image(full, sub, components=[comp]).to(torch.float64)
            on = torch.where(own, image, torch.zeros_like(image)).sum(dim=(1, 2))
            total = 10.0 ** (-0.4 * (natural[comp.name]["mag"].to(torch.float64) - zeropoint))
            out.append(on / total)
    return torch.stack(out, 1)
