"""``fit``: cutouts + initial guesses + model -> catalog.  The fitter's Python entry point.

>>> from galmoss_auto.fitting import fit, read_cutout
>>> cutouts = [read_cutout("gal1.fits", sigma="gal1_sigma.fits", psf="psf.fits", zeropoint=22.5)]
>>> catalog = fit(cutouts, {"sersic_x": [64.2], "sersic_y": [63.8], "sersic_mag": [17.1],
...                         "sersic_r_e": [6.0], "sersic_n": [2.0], "sersic_q": [0.7],
...                         "sersic_pa": [30.0]})
>>> catalog["sersic_r_e", "sersic_r_e_err", "chi2_nu", "flags"]

Cutouts are grouped (with/without PSF), sorted by size into batches of ``batch_size`` (a batch
is padded to its largest member), fitted together on ``device``, and the rows are returned in
the input order.  A batch that fails *numerically* (``torch.linalg.LinAlgError``, an
``ArithmeticError``, or :class:`FitNumericalError`) is split until the offending galaxy is
isolated; that galaxy gets Flag.FIT_FAILED and the others are fitted.  Anything else (a
``TypeError``, a CUDA ``RuntimeError``, ...) is a bug or a broken device, not a property of one
galaxy: it propagates, rather than turning every galaxy into a silent FIT_FAILED row.  A batch
that runs out of device memory is split too (smaller batches may fit); one galaxy that does not
fit in memory re-raises.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import torch

from .adam import AdamSettings, adam
from .catalog import build_catalog, merge_in_order
from .conventions import wrap_pa_deg
from .coverage import MIN_LIGHT_ON_CUTOUT, light_on_cutout
from .flags import Flag
from .lm import LMSettings, levenberg_marquardt
from .model import Model, default_model
from .problem import FitProblem
from .render import RenderConfig
from .uncertainty import catalog_jacobian, covariance, normal_matrix, propagate

__all__ = ["fit", "model_images", "default_batch_size", "FitNumericalError", "bootstrap_seed"]

log = logging.getLogger(__name__)


class FitNumericalError(ArithmeticError):
    """A numerical failure of one galaxy's fit (non-finite values where the solver needs finite
    ones); :func:`fit` isolates it to that galaxy and flags it FIT_FAILED."""


#: exceptions that are a property of the data of some galaxy in the batch, isolated per galaxy
_NUMERICAL_ERRORS = (torch.linalg.LinAlgError, ArithmeticError)


def _init_columns(init, cutouts) -> dict:
    """Init table/dict -> {column: array}, reordered by ``id`` when the table has one."""
    if init is None:
        return {}
    if hasattr(init, "colnames"):
        cols = {name: np.asarray(init[name]) for name in init.colnames}
    else:
        cols = {k: np.asarray(v) for k, v in dict(init).items()}
    if "id" in cols:
        ids = [str(i) for i in cols["id"]]
        want = [str(c.id) for c in cutouts]
        if ids != want:
            where = {i: k for k, i in enumerate(ids)}
            missing = [i for i in want if i not in where]
            if missing:
                raise KeyError(f"initial-guess table has no row for id(s) {missing[:5]}")
            order = np.array([where[i] for i in want])
            cols = {k: v[order] for k, v in cols.items()}
    return cols


def default_batch_size(device) -> int:
    """Galaxies fitted together by default: 64 on the CPU (its caches favour small batches:
    64 was 25% faster than 256 on a 2-core EPYC), 2048 on a GPU (memory grows linearly with
    it; 25.7 GB for 128×128 cutouts with a 25×25 PSF was measured on an H100 with the earlier
    finite-difference Jacobian, which needed more than the analytic one)."""
    return 2048 if torch.device(device).type == "cuda" else 64


def fit(cutouts, init=None, model: Model | None = None, *, method: str = "lm", errors: str = "covariance",
        n_bootstrap: int = 50, device=None, batch_size: int | None = None, render_config: RenderConfig | None = None,
        lm_settings: LMSettings | None = None, adam_settings: AdamSettings | None = None,
        seed: int = 0, scale_errors: bool = False, jacobian: str = "auto"):
    """Fit ``model`` to every cutout; return the catalog (astropy Table, one row per cutout).

    cutouts : list of :class:`~galmoss_auto.fitting.cutout.Cutout`.
    init : astropy Table or dict of columns ``<component>_<param>`` in catalog conventions, one
        row per cutout (matched by an ``id`` column if present, else by order).  Missing columns
        get a guess from the image.
    model : default one Sérsic component named ``sersic``.
    method : ``"lm"`` (Levenberg–Marquardt, default) or ``"adam"``.
    errors : ``"covariance"`` (sqrt diag (JᵀWJ)⁻¹), ``"bootstrap"`` (``n_bootstrap`` Poisson
        replicates per galaxy) or ``"none"``.
    batch_size : galaxies fitted together (default: :func:`default_batch_size`).
    scale_errors : multiply covariance errors by sqrt(chi2_nu) (off by default, as in GALFIT).
    jacobian : ``"auto"`` (analytic where the model allows it: with a PSF and no boxy
        component; else forward differences), ``"analytic"`` or ``"fd"``.
    """
    if method not in ("lm", "adam"):
        raise ValueError(f"method must be 'lm' or 'adam', got {method!r}")
    if errors not in ("covariance", "bootstrap", "none"):
        raise ValueError(f"errors must be 'covariance', 'bootstrap' or 'none', got {errors!r}")
    model = model or default_model()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if batch_size is None:
        batch_size = default_batch_size(device)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if jacobian not in ("auto", "analytic", "fd"):
        raise ValueError(f"jacobian must be 'auto', 'analytic' or 'fd', got {jacobian!r}")
    if errors == "bootstrap" and int(n_bootstrap) < 2:
        raise ValueError(f"n_bootstrap must be >= 2, got {n_bootstrap}")
    cutouts = list(cutouts)
    if not cutouts:
        return build_catalog(model, [], {}, None, [], [], [], [], [])
    cols = _init_columns(init, cutouts)
    all_ids = [c.id for c in cutouts]
    tables = []
    if model.has_point_source:
        # a point source is the PSF itself: without one the cutout cannot be fitted
        no_psf = [i for i, c in enumerate(cutouts) if c.psf is None]
        for i in no_psf:
            log.warning("%s: the model has a point source but the cutout has no PSF; flagged BAD_INPUT",
                        cutouts[i].id)
        if no_psf:
            tables.append(_failed_rows(model, [cutouts[i] for i in no_psf], Flag.BAD_INPUT))
            keep = [i for i in range(len(cutouts)) if cutouts[i].psf is not None]
            cols = {k: v[keep] for k, v in cols.items()}
            cutouts = [cutouts[i] for i in keep]
            if not cutouts:
                return merge_in_order(tables, all_ids)
    opts = dict(model=model, method=method, errors=errors, n_bootstrap=n_bootstrap, device=device,
                batch_size=batch_size,
                config=render_config or RenderConfig(), lm=lm_settings or LMSettings(),
                adam=adam_settings or AdamSettings(), seed=seed, scale_errors=scale_errors,
                jacobian=jacobian)
    groups: dict = {}
    for i, c in enumerate(cutouts):
        groups.setdefault(c.psf is not None, []).append(i)
    for idx in groups.values():
        idx = sorted(idx, key=lambda i: (cutouts[i].shape[0] * cutouts[i].shape[1], cutouts[i].shape))
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            tables.append(_fit_isolating([cutouts[i] for i in chunk],
                                         {k: v[chunk] for k, v in cols.items()}, opts))
    return merge_in_order(tables, all_ids)


def _failed_rows(model, cutouts, flag):
    """Catalog rows (NaN parameters) for galaxies that could not be fitted, with ``flag``."""
    n = len(cutouts)
    return build_catalog(model, [c.id for c in cutouts], {}, None, [np.nan] * n, [0] * n,
                         [int(flag) | c.flags for c in cutouts], [c.n_bad_pixels for c in cutouts],
                         [c.pixel_scale for c in cutouts])


def _fit_isolating(cutouts, cols, opts):
    """Fit a batch; if it fails numerically (or runs out of memory), split it so one bad galaxy
    cannot stop the others.  Other exceptions propagate (see the module docstring)."""
    try:
        return _fit_batch(cutouts, cols, opts)
    except torch.OutOfMemoryError:
        if len(cutouts) == 1:
            raise
        log.warning("out of memory fitting %d galaxies together; splitting the batch", len(cutouts))
    except _NUMERICAL_ERRORS as exc:
        if len(cutouts) == 1:
            log.warning("fit of %s failed: %s: %s", cutouts[0].id, type(exc).__name__, exc)
            return _failed_rows(opts["model"], cutouts, Flag.FIT_FAILED)
    half = len(cutouts) // 2
    left = {k: v[:half] for k, v in cols.items()}
    right = {k: v[half:] for k, v in cols.items()}
    return merge_in_order([_fit_isolating(cutouts[:half], left, opts),
                           _fit_isolating(cutouts[half:], right, opts)], [c.id for c in cutouts])


def _fit_batch(cutouts, cols, opts):
    model: Model = opts["model"]
    device = opts["device"]
    problem = FitProblem(model, cutouts, device=device, config=opts["config"], jacobian=opts["jacobian"])
    full0 = model.initial_full(cols, cutouts).to(device)
    free0, b = model.split(full0)
    free0 = torch.minimum(torch.maximum(free0, problem.lower), problem.upper)
    # centre windows around the starts (Model.windows; e.g. fitted neighbours)
    problem.lower, problem.upper = model.window_bounds(free0, problem.lower, problem.upper)
    if opts["method"] == "lm":
        free, chi2, n_iter, converged, normal = levenberg_marquardt(problem, free0, b, opts["lm"])
    else:
        free, chi2, n_iter, converged = adam(problem, free0, b, opts["adam"])
        normal = None
    B, F = free.shape
    flags = torch.tensor([c.flags for c in cutouts], dtype=torch.long, device=device)
    flags |= torch.where(converged, 0, int(Flag.NOT_CONVERGED))
    span = (problem.upper - problem.lower).clamp(max=1e6)
    tol = 1e-6 * torch.where(torch.isfinite(span), span, torch.ones_like(span)) + 1e-9
    at_bound = ((free - problem.lower).abs() < tol) | ((problem.upper - free).abs() < tol)
    aux = model.auxiliary_free.to(device)
    flags |= torch.where((at_bound & ~aux).any(1), int(Flag.AT_BOUND), 0)
    flags |= torch.where((at_bound & aux).any(1), int(Flag.NEIGHBOUR_AT_BOUND), 0)
    n_bad = torch.tensor([c.n_bad_pixels for c in cutouts], device=device)
    flags |= torch.where(n_bad > 0, int(Flag.AUTO_MASKED_PIXELS), 0)
    dof = problem.n_good - F
    flags |= torch.where(dof < 1, int(Flag.TOO_FEW_PIXELS), 0)
    chi2_nu = torch.where(dof >= 1, chi2 / dof.clamp(min=1), torch.full_like(chi2, float("nan")))
    full = model.expand(free, b)
    values = {k: v.detach() for k, v in model.catalog_values(full).items()}
    finite = torch.stack([torch.isfinite(v) for v in values.values()], 1).all(1) & torch.isfinite(chi2)
    flags |= torch.where(finite, 0, int(Flag.FIT_FAILED))
    # a target component whose light lies mostly beyond the cutout: its magnitude is an
    # extrapolation, not a measurement (fitting/coverage.py)
    off = (light_on_cutout(problem, full) < MIN_LIGHT_ON_CUTOUT).any(1) & finite
    flags |= torch.where(off, int(Flag.LIGHT_OFF_CUTOUT), 0)

    err = None
    if opts["errors"] == "covariance":
        held = at_bound & aux   # a neighbour's parameter on a bound (fitting/uncertainty.py)
        # a neighbour that faded to a magnitude bound constrains none of its parameters (its
        # position errors came out as 1e15 px): all of them are held
        held |= (((held & model.magnitude_free.to(device)).double() @ model.same_component.to(device)) > 0)
        C, ok = covariance(normal if normal is not None else normal_matrix(problem, free, b), held)
        names, T = catalog_jacobian(model, free, b)
        e = propagate(C, T)
        e[((T != 0) & held[:, None, :]).any(-1)] = float("nan")
        if opts["scale_errors"]:
            e = e * torch.sqrt(torch.nan_to_num(chi2_nu, nan=1.0))[:, None]
        e[~ok] = float("nan")
        flags |= torch.where(ok, 0, int(Flag.COVARIANCE_FAILED))
        err = {n: e[:, j].cpu().numpy() for j, n in enumerate(names)}
    elif opts["errors"] == "bootstrap":
        err = _bootstrap(problem, cutouts, free, b, values, opts)

    vals = {k: v.cpu().numpy() for k, v in values.items()}
    bad = ~finite.cpu().numpy()
    for v in vals.values():
        v[bad] = np.nan
    return build_catalog(model, [c.id for c in cutouts], vals, err, chi2_nu.cpu().numpy(),
                         n_iter.cpu().numpy(), flags.cpu().numpy(), n_bad.cpu().numpy(),
                         [c.pixel_scale for c in cutouts])


def bootstrap_seed(seed: int, galaxy_id) -> np.random.SeedSequence:
    """The seed of one galaxy's bootstrap replicates: (``seed``, a hash of its id).

    A galaxy's replicates depend on nothing else (not its batch, its neighbours or the batch
    size), so its bootstrap errors are reproducible however the galaxies are grouped.
    """
    digest = hashlib.sha256(str(galaxy_id).encode("utf-8")).digest()
    words = [int.from_bytes(digest[k:k + 4], "little") for k in range(0, 16, 4)]
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *words])


def _bootstrap(problem, cutouts, free, b, values, opts):
    """Standard deviations over Poisson-bootstrap replicates, each galaxy resampled independently.

    Galaxy g's replicate weights are Poisson(1) counts over its own pixels drawn from
    :func:`bootstrap_seed` (seed, g.id); the replicates are fitted with the caller's LM settings.
    """
    model: Model = opts["model"]
    R = int(opts["n_bootstrap"])
    if R < 2:
        raise ValueError(f"n_bootstrap must be >= 2, got {R}")
    settings = opts["lm"]
    # replicates are fitted a few galaxies at a time, so that one LM batch holds about
    # batch_size replicates (memory is per batch member: B x R at once would not fit)
    step = max(1, int(opts["batch_size"]) // R)
    fits = []
    for start in range(0, len(cutouts), step):
        group = cutouts[start:start + step]
        reps = FitProblem(model, [c for c in group for _ in range(R)], device=problem.device,
                          config=problem.config, jacobian=opts["jacobian"])
        counts = np.zeros(tuple(reps.weight.shape), np.float32)
        for k, c in enumerate(group):
            h, w = c.shape
            rng = np.random.default_rng(bootstrap_seed(opts["seed"], c.id))
            counts[k * R:(k + 1) * R, :h, :w] = rng.poisson(1.0, size=(R, h, w))
        weight = reps.weight * torch.sqrt(torch.as_tensor(counts, device=reps.weight.device))
        f_group = free[start:start + step].repeat_interleave(R, 0)
        b_group = b[start:start + step].repeat_interleave(R, 0)
        fits.append(levenberg_marquardt(reps, f_group, b_group, settings, sub_weight=weight)[0])
    f_rep = torch.cat(fits)
    rep_values = model.catalog_values(model.expand(f_rep, b.repeat_interleave(R, 0)))
    out = {}
    for (name, comp, spec) in model.catalog_columns:
        v = rep_values[name].reshape(len(cutouts), R)
        delta = v - values[name][:, None]
        if spec.kind == "angle":
            delta = wrap_pa_deg(delta)
        out[name] = torch.sqrt((delta - delta.mean(1, keepdim=True)).pow(2).sum(1) / (R - 1)).cpu().numpy()
    return out


def model_images(cutouts, catalog, model: Model | None = None, device=None,
                 render_config: RenderConfig | None = None) -> list[dict]:
    """Data, model, residual, mask and each component's image for every cutout, from a catalog.

    Each component is shown after PSF convolution (the sky as is).  Returns one dict of 2-D
    float arrays per cutout, in the cutouts' order, each at the cutout's own size.
    """
    model = model or default_model()
    device = torch.device(device or "cpu")
    cutouts = list(cutouts)
    cols = _init_columns(catalog, cutouts)
    out = []
    for cutout_index, c in enumerate(cutouts):
        problem = FitProblem(model, [c], device=device, config=render_config)
        row = {k: v[cutout_index:cutout_index + 1] for k, v in cols.items()}
        full = model.initial_full(row, [c]).to(device)
        sub = problem.subset()
        with torch.no_grad():
            total = problem.model_image(full, sub)[0].cpu().numpy().astype(np.float64)
            images = {"data": c.image, "model": total, "residual": c.image - total, "mask": c.mask}
            for comp in model.components:
                images[comp.name] = problem.model_image(full, sub, [comp])[0].cpu().numpy().astype(np.float64)
        out.append(images)
    return out
