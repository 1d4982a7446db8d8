"""Accuracy and speed statistics of one tool's fits against the truth.

Per galaxy: Δmag = fit - truth (mag); Δlog r_e = log10(fit / truth) (dex); Δn/n = fit/truth - 1;
Δq = fit - truth; ΔPA = fit - truth wrapped into (-90, 90] deg, only for galaxies with
q_true <= ``pa_q_max`` (the PA of a round galaxy is undefined).  Per tool: the median and the
robust scatter 1.4826 x MAD (about the median) of each, over galaxies with a finite fit;
the catastrophic fraction (|Δmag| > 0.5 or |Δlog r_e| > 0.3, or no finite fit); the number not
converged (the tool's own criterion) and galaxies per second.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from .conventions import delta_pa

__all__ = ["DELTAS", "deltas", "robust_scatter", "summarise", "paired_scatter_difference"]

#: Statistic name -> label used in the tables.
DELTAS = {"dmag": "Δmag", "dlogre": "Δlog r_e", "dn_n": "Δn/n", "dq": "Δq", "dpa": "ΔPA"}
CATASTROPHIC_DMAG = 0.5
CATASTROPHIC_DLOGRE = 0.3


def robust_scatter(x) -> float:
    """1.4826 x median absolute deviation about the median of the finite values (NaN if none)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def _col(t: Table, name: str) -> np.ndarray:
    return np.asarray(t[name], dtype=np.float64)


def deltas(fit: Table, truth: Table, pa_q_max: float = 0.8) -> dict[str, np.ndarray]:
    """Per-galaxy differences (see the module docstring); rows are matched by ``id``."""
    if list(map(str, fit["id"])) != list(map(str, truth["id"][: len(fit)])):
        raise ValueError("fit and truth tables are not in the same id order")
    truth = truth[: len(fit)]
    with np.errstate(divide="ignore", invalid="ignore"):
        d = {
            "dmag": _col(fit, "sersic_mag") - _col(truth, "sersic_mag"),
            "dlogre": np.log10(_col(fit, "sersic_r_e") / _col(truth, "sersic_r_e")),
            "dn_n": _col(fit, "sersic_n") / _col(truth, "sersic_n") - 1.0,
            "dq": _col(fit, "sersic_q") - _col(truth, "sersic_q"),
        }
    dpa = delta_pa(_col(fit, "sersic_pa"), _col(truth, "sersic_pa"))
    d["dpa"] = np.where(_col(truth, "sersic_q") <= pa_q_max, dpa, np.nan)
    return d


def summarise(fit: Table, truth: Table, wall_s: float, pa_q_max: float = 0.8) -> dict:
    """Speed and accuracy summary of one tool (JSON-ready floats and ints)."""
    d = deltas(fit, truth, pa_q_max)
    n = len(fit)
    finite = np.isfinite(d["dmag"]) & np.isfinite(d["dlogre"])
    cata = ~finite | (np.abs(np.nan_to_num(d["dmag"], nan=np.inf)) > CATASTROPHIC_DMAG) | (
        np.abs(np.nan_to_num(d["dlogre"], nan=np.inf)) > CATASTROPHIC_DLOGRE)
    out = {"n": n, "wall_s": float(wall_s),
           "galaxies_per_s": float(n / wall_s) if wall_s > 0 else float("nan"),
           "catastrophic_fraction": float(np.mean(cata)),
           "not_converged": int(n - np.count_nonzero(np.asarray(fit["converged"], bool))),
           "failed": int(np.count_nonzero(~finite))}
    for k, v in d.items():
        good = v[np.isfinite(v)]
        out[f"{k}_median"] = float(np.median(good)) if good.size else float("nan")
        out[f"{k}_scatter"] = robust_scatter(good)
    return out


def paired_scatter_difference(ours, theirs, n_boot: int = 2000, seed: int = 0,
                              level: float = 0.95) -> tuple[float, float, float]:
    """robust_scatter(ours) - robust_scatter(theirs) on the galaxies both fitted, and its
    ``level`` confidence interval from a paired bootstrap (galaxies resampled together).

    Scatters of 20-50 galaxies at the noise floor differ by chance by several per cent; the
    interval says whether a difference is larger than that.  Returns (diff, low, high).
    """
    a, b = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    good = np.isfinite(a) & np.isfinite(b)
    a, b = a[good], b[good]
    if a.size < 3:
        return float("nan"), float("nan"), float("nan")
    diff = robust_scatter(a) - robust_scatter(b)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))

    def scatter_rows(x):
        med = np.median(x, axis=1, keepdims=True)
        return 1.4826 * np.median(np.abs(x - med), axis=1)

    boots = scatter_rows(a[idx]) - scatter_rows(b[idx])
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(boots, [tail, 100 - tail])
    return float(diff), float(low), float(high)
