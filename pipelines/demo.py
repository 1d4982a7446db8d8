"""``galmoss-auto demo``: the README's main job on a built-in example.

Simulates a few survey cutouts with contaminating neighbours and stars (the data_scripts
simulator, truth kept beside them), runs the whole pipeline on the images alone (no masks, no
initial values), and writes the catalog, PNG panels and a truth-vs-fit figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["add_parser", "run_demo", "recovery_figure"]


def add_parser(subparsers) -> None:
    from galmoss_auto.pipelines.cli import add_run_arguments
    p = subparsers.add_parser("demo", help="simulate a few cutouts and run the whole pipeline on them",
                              description=__doc__)
    p.add_argument("--out", default="demo_output", help="output directory (default demo_output)")
    p.add_argument("--n", type=int, default=16, help="number of cutouts (default 16)")
    p.add_argument("--survey", default="sdss", help="simulated survey preset (default sdss)")
    p.add_argument("--band", default="r", help="simulated band (default r)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    add_run_arguments(p)
    p.set_defaults(func=_cmd_demo, panels=4, overwrite=True)


def recovery_figure(catalog, truth, path, component: str = "sersic") -> Path:
    """Scatter of fitted against true mag, r_e, n and q (PNG at ``path``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth_by_id = {str(t["id"]): t for t in truth}
    rows = [r for r in catalog if str(r["id"]) in truth_by_id]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.3))
    for ax, p, log in zip(axes, ("mag", "r_e", "n", "q"), (False, True, True, False)):
        t = np.array([float(truth_by_id[str(r["id"])][f"{component}_{p}"]) for r in rows])
        f = np.array([float(r[f"{component}_{p}"]) for r in rows])
        i = np.array([float(r[f"init_{component}_{p}"]) for r in rows])
        ax.scatter(t, i, s=12, c="0.6", label="initial (sep)")
        ax.scatter(t, f, s=14, c="C0", label="fit")
        finite = np.concatenate([t, f[np.isfinite(f)]])
        lo, hi = np.nanmin(finite), np.nanmax(finite)
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        if log:
            from matplotlib.ticker import NullFormatter, ScalarFormatter
            ax.set_xscale("log")
            ax.set_yscale("log")
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_formatter(ScalarFormatter())
                axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"true {p}")
        ax.set_ylabel(f"measured {p}")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def run_demo(out, n: int = 16, survey: str = "sdss", band: str = "r", seed: int = 1,
             stream=None, **run_options) -> dict:
    """Simulate ``n`` cutouts into ``out/simulated``, run the pipeline into ``out``, draw
    ``out/recovery.png``; returns the run record with ``figure`` and ``truth`` added."""
    from astropy.table import Table

    from galmoss_auto.data_scripts.simulate import simulate
    from galmoss_auto.pipelines.config import RunConfig
    from galmoss_auto.pipelines.run import run

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = Path(out)
    manifest = Path(simulate(survey, band, n, seed, out / "simulated", progress=False, shards=False))
    # The pipeline sees what a survey gives: images, PSFs, zero-point, pixel scale, gain; no
    # sigma maps, no masks, no initial values.
    full = Table.read(manifest)
    raw = full["id", "image", "psf", "zeropoint", "pixel_scale", "gain"]
    raw_path = manifest.parent / "images_only.ecsv"
    raw.write(raw_path, overwrite=True)
    # the survey and band let --mask/--init auto pick the shipped learned stages
    options = {"panels": 4, "overwrite": True, "survey": survey, "band": band} | run_options
    record = run(RunConfig(input=str(raw_path), out=str(out), **options), stream=stream)
    truth_path = manifest.parent / "truth.ecsv"
    catalog = Table.read(out / "catalog.ecsv")
    record["figure"] = str(recovery_figure(catalog, Table.read(truth_path), out / "recovery.png"))
    record["truth"] = str(truth_path)
    return record


def _cmd_demo(args) -> int:
    from galmoss_auto.pipelines.cli import summarise
    from galmoss_auto.pipelines.config import RunConfig

    names = set(RunConfig.__dataclass_fields__) - {"input", "out", "survey", "band"}
    options = {k: v for k, v in vars(args).items() if k in names}
    record = run_demo(args.out, args.n, args.survey, args.band, args.seed, **options)
    summarise(record)
    print(f"galmoss-auto: figure: {record['figure']} (fit and sep start against truth: {record['truth']})")
    panels = Path(args.out) / "panels"
    if panels.is_dir():
        print(f"galmoss-auto: panels: {panels}/")
    return 0

