"""galmoss-auto's own fitter, behind the same interface as the peer adapters.

``galmoss_auto.fitting.fit(cutouts, init, errors=..., device=..., batch_size=...)`` already
speaks the catalog conventions, so nothing is converted here.  "converged" means neither
``NOT_CONVERGED`` nor ``FIT_FAILED`` is set in the ``flags`` column.
"""

from __future__ import annotations

import time

import numpy as np

from .base import PeerResult, result_table

NAME = "galmoss-auto"


def available() -> tuple[bool, str]:
    try:
        from galmoss_auto.fitting import fit  # noqa: F401
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"
    from importlib.metadata import PackageNotFoundError, version
    try:
        return True, version("galmoss-auto")
    except PackageNotFoundError:
        return True, "source"


def fit(cutouts, init, *, device: str = "cpu", errors: str = "covariance",
        batch_size: int | None = None, model=None, method: str = "lm") -> PeerResult:
    """Fit with galmoss-auto; ``errors`` in {"covariance", "bootstrap", "none"}."""
    if not cutouts:
        raise ValueError("no cutouts to fit")
    ok, version = available()
    if not ok:
        raise RuntimeError(f"galmoss-auto's fitter is not importable: {version}")
    from galmoss_auto.fitting import fit as gfit
    from galmoss_auto.fitting.flags import Flag

    kwargs = {"errors": errors, "device": device, "method": method}
    if batch_size is not None:
        kwargs["batch_size"] = int(batch_size)
    if model is not None:
        kwargs["model"] = model
    # Every <component>_<param> column; bookkeeping columns (id, init_*) stay behind.
    init_cols = {k: np.asarray(init[k], dtype=np.float64)[: len(cutouts)]
                 for k in init.colnames if k != "id" and not k.startswith("init_")}
    t0 = time.perf_counter()
    cat = gfit(cutouts, init_cols, **kwargs)
    wall = time.perf_counter() - t0
    flags = np.asarray(cat["flags"], dtype=np.int64)
    bad = int(Flag.NOT_CONVERGED) | int(Flag.FIT_FAILED)
    comp = "sersic"
    vals = {p: np.asarray(cat[f"{comp}_{p}"], dtype=np.float64)
            for p in ("x", "y", "mag", "r_e", "n", "q", "pa")}
    table = result_table([str(i) for i in cat["id"]], vals, (flags & bad) == 0)
    table["flags"] = flags
    if "n_iter" in cat.colnames:
        table["n_iter"] = np.asarray(cat["n_iter"])
    settings = {"method": method, "errors": errors, "device": device,
                "batch_size": batch_size or "default"}
    return PeerResult(NAME, version, table, wall, settings)
