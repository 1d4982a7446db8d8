"""``galmoss-auto run``: raw cutouts in, a catalog of fitted Sérsic parameters out.

Stages, per chunk of ``chunk_size`` galaxies::

    read FITS -> sigma (estimated if absent) -> masker -> initializer     (DataLoader workers)
    -> fitter (batched, on the GPU when present)                          (main process)
    -> shard: catalog rows + masks written atomically                     (main process)

Nothing holds more than the chunks in flight, and every finished chunk is on disk, so an
interrupted run continues with ``resume=True`` and redoes no finished galaxy.  At the end the
shards are merged into ``catalog.fits`` and ``catalog.ecsv`` (each id once, input order) and
``run.json`` records the settings, versions, device, per-stage timings and flag counts.

Catalog columns: those of :func:`galmoss_auto.fitting.fit` (``id``, ``sersic_<p>``,
``sersic_<p>_err``, ``chi2_nu``, ``n_iter``, ``flags``, ...), then what the stages did:
``init_sersic_<p>`` (the initial guess), ``init_concentration``, ``init_kron_flux``,
``mask_n_objects`` (sep detections; -1 without sep), ``mask_n_masked`` (pixels the masker
masked), ``mask_frac`` (fraction of pixels excluded from the fit), ``sky_level``, ``sky_rms``,
``sigma_estimated``, ``message`` (why a stage failed), ``source`` (the image file).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack

from galmoss_auto.automask.base import get_masker
from galmoss_auto.automask.detect import DetectConfig
from galmoss_auto.fitting.api import default_batch_size
from galmoss_auto.fitting.dataset import CutoutFailure, cutout_loader
from galmoss_auto.fitting.flags import Flag
from galmoss_auto.initnet.base import PARAMS, get_initializer
from galmoss_auto.pipelines.config import RunConfig, survey_defaults
from galmoss_auto.pipelines.inputs import InputError, apply_defaults, read_inputs
from galmoss_auto.pipelines.prepare import Prepared, Preparer
from galmoss_auto.pipelines.products import render_products
from galmoss_auto.pipelines.progress import Progress
from galmoss_auto.pipelines.record import flag_counts, write_record
from galmoss_auto.pipelines.shards import ShardStore, atomic_write_table, fill_missing

__all__ = ["run", "RunError", "COMPONENT", "CRASH_ENV"]

#: The default one-component model's component name (catalog prefix).
COMPONENT = "sersic"
#: Test hook: after this many shards the process dies with os._exit, as under kill -9.
CRASH_ENV = "GALMOSS_AUTO_CRASH_AFTER_SHARDS"
_OUTPUTS = ("shards", "masks", "panels", "blocks", "psf", "catalog.fits", "catalog.ecsv",
            "run.json", "run_config.json")


class RunError(RuntimeError):
    """The run cannot start or continue (bad settings, a clash with an earlier run)."""


def _prepare_out_dir(cfg: RunConfig, store: ShardStore) -> None:
    out = Path(cfg.out)
    cfg_path = out / "run_config.json"
    if cfg.overwrite:
        for name in _OUTPUTS:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    if store.exists() and not cfg.resume:
        raise RunError(f"{out} already holds the results of a run; use --resume to continue it "
                       "or --overwrite to start over")
    if cfg.resume and store.exists():
        if not cfg_path.is_file():
            raise RunError(f"{cfg_path}: missing, so the earlier run's settings are unknown; "
                           "use --overwrite to start over")
        before = json.loads(cfg_path.read_text())
        now = json.loads(json.dumps(cfg.result_settings()))
        diff = sorted(k for k in now if before.get(k) != now[k])
        if diff:
            raise RunError(f"cannot resume {out}: settings differ from the earlier run: "
                           + ", ".join(f"{k} was {before.get(k)!r}, now {now[k]!r}" for k in diff))
    out.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(json.dumps(cfg.result_settings(), indent=2) + "\n")


def _pick_device(device):
    import torch
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _failure_table(failures: list[CutoutFailure], model) -> Table:
    """The fitter's own bad-input rows (NaN parameters, BAD_INPUT), plus message and source."""
    from galmoss_auto.fitting.catalog import bad_input_rows
    from galmoss_auto.fitting.model import default_model
    table = bad_input_rows(model or default_model(), [f.id for f in failures])
    table["flags"] = np.asarray(table["flags"], np.int64)
    table["message"] = [f.message for f in failures]
    table["source"] = [f.source for f in failures]
    return table


def _stage_columns(prepared: list[Prepared]) -> Table:
    """``init_sersic_*`` and the stages' own columns, one row per prepared galaxy."""
    cols = {}
    for p in PARAMS:
        cols[f"init_{COMPONENT}_{p}"] = np.array([g.init.params[p] for g in prepared], np.float64)
    keys = []
    for g in prepared:
        keys += [k for k in g.columns if k not in keys]
    defaults = {"mask_n_objects": -1, "mask_n_masked": 0, "sigma_estimated": False, "message": ""}
    for k in keys:
        values = [g.columns.get(k, defaults.get(k, np.nan)) for g in prepared]
        cols[k] = np.array([str(v) for v in values]) if isinstance(values[0], str) else np.array(values)
    cols["source"] = np.array([g.cutout.source for g in prepared])
    return Table(cols)


def _fit_chunk(prepared: list[Prepared], cfg: RunConfig, device, model=None) -> Table:
    from galmoss_auto.fitting import fit
    init = {f"{COMPONENT}_{p}": np.array([g.init.params[p] for g in prepared], np.float64)
            for p in PARAMS}
    kwargs = {"method": cfg.method, "errors": cfg.errors, "device": device}
    if cfg.batch_size is not None:
        kwargs["batch_size"] = cfg.batch_size
    table = fit([g.cutout for g in prepared], init, model, **kwargs)
    if [str(i) for i in table["id"]] != [g.id for g in prepared]:
        raise RuntimeError("the fitter returned rows in a different order from its input")
    table["flags"] = np.asarray(table["flags"], np.int64) | np.array([g.flags for g in prepared],
                                                                      np.int64)
    stages = _stage_columns(prepared)
    for name in stages.colnames:
        table[name] = stages[name]
        fitted = name.removeprefix("init_")
        if name.startswith("init_") and fitted in table.colnames:
            table[name].unit = table[fitted].unit     # the starting values share the fit's units
    return table


def run(cfg: RunConfig, model=None, stream=None) -> dict:
    """Run the pipeline; returns the run record (also written to ``OUT/run.json``).

    ``model``: a :class:`galmoss_auto.fitting.Model` (None: one Sérsic named ``sersic``).
    Raises :class:`RunError` for unusable settings or input (the message names the file).
    """
    stream = stream if stream is not None else sys.stderr
    t_start = time.perf_counter()
    out = Path(cfg.out)
    store = ShardStore(out)
    try:
        records = read_inputs(cfg.input)          # before touching the output directory
        _prepare_out_dir(cfg, store)
        defaults = survey_defaults(cfg.survey, cfg.band, out / "psf")
        defaults |= {k: getattr(cfg, k) for k in ("psf", "zeropoint", "pixel_scale", "gain")
                     if getattr(cfg, k) is not None}
        apply_defaults(records, defaults)
    except (InputError, ValueError) as exc:
        raise RunError(str(exc)) from None
    order = [r["id"] for r in records]
    store.clean_temporaries()
    done = store.done_ids() if cfg.resume else set()
    todo = [r for r in records if r["id"] not in done]

    detect_cfg = DetectConfig(thresh=cfg.detect_thresh)
    mask_opts = {"detect": detect_cfg, "dilate": cfg.dilate} if cfg.mask == "sep" else {}
    init_opts = {"detect": detect_cfg} if cfg.init == "sep" else {}
    try:
        masker = get_masker(cfg.mask, **mask_opts)
        initializer = get_initializer(cfg.init, **init_opts)
    except (ValueError, OSError) as exc:
        raise RunError(str(exc)) from None
    device = _pick_device(cfg.device)

    timings = dict.fromkeys(("read", "sigma", "mask", "init", "fit", "write", "products"), 0.0)
    progress = Progress(len(records), done=len(records) - len(todo), stream=stream,
                        enabled=cfg.progress)
    crash_after = int(os.environ.get(CRASH_ENV, "0") or 0)
    index, written, panels = store.next_index(), 0, 0
    # on a GPU a chunk is one full fitter batch; on the CPU small shards resume at a finer grain
    chunk_size = cfg.chunk_size or (default_batch_size(device) if device.type == "cuda" else 128)
    loader = cutout_loader(todo, batch_size=chunk_size, num_workers=cfg.workers,
                           transform=Preparer(masker, initializer))
    for chunk in loader:
        prepared = [g for g in chunk if isinstance(g, Prepared)]
        failures = [g for g in chunk if isinstance(g, CutoutFailure)]
        for g in chunk:
            for k, v in g.timings.items():
                timings[k] += v
        parts = []
        t0 = time.perf_counter()
        if prepared:
            fitted = _fit_chunk(prepared, cfg, device, model)
            parts.append(fitted)
        timings["fit"] += time.perf_counter() - t0
        if failures:
            parts.append(_failure_table(failures, model))
            for f in failures:
                stream.write(f"galmoss-auto: {f.id}: {f.message} (flagged BAD_INPUT)\n")
        table = parts[0] if len(parts) == 1 else fill_missing(
            vstack(parts, join_type="outer", metadata_conflicts="silent"))
        rank = {g.id: k for k, g in enumerate(chunk)}
        table = table[np.argsort([rank[str(i)] for i in table["id"]], kind="stable")]
        t0 = time.perf_counter()
        if prepared:
            panels += render_products(prepared, table, out, cfg.blocks, cfg.panels - panels,
                                      model, device)
        timings["products"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        masks = None
        if cfg.save_masks and prepared:
            # bit 1: the input mask and unusable pixels; bit 2: the masker's own pixels.
            masks = [(g.id, (g.cutout.mask & ~g.auto_mask).astype(np.uint8)
                      | (g.auto_mask.astype(np.uint8) << 1)) for g in prepared]
        store.write(index, table, masks)
        timings["write"] += time.perf_counter() - t0
        index += 1
        written += 1
        progress.update(len(chunk))
        if crash_after and written >= crash_after:
            os._exit(137)
    progress.close()

    t0 = time.perf_counter()
    catalog = store.merge(order)
    atomic_write_table(catalog, out / "catalog.fits", "fits")
    atomic_write_table(catalog, out / "catalog.ecsv", "ascii.ecsv")
    timings["write"] += time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    n_new = len(todo)
    flags = np.asarray(catalog["flags"], np.int64)
    counts = {"galaxies": len(catalog), "processed_this_session": n_new,
              "resumed_from_shards": len(records) - n_new,
              "fitted": int(np.count_nonzero((flags & int(Flag.BAD_INPUT | Flag.FIT_FAILED)) == 0)),
              "flags": flag_counts(flags)}
    rate = {"galaxies_per_s_end_to_end": n_new / timings["total"] if timings["total"] > 0 else None}
    for k in ("read", "sigma", "mask", "init", "fit", "write"):
        rate[f"galaxies_per_s_{k}"] = n_new / timings[k] if timings[k] > 0 else None
    return write_record(out / "run.json", config=cfg.to_dict(), device=device, timings=timings,
                        counts=counts, extra={"rates": rate, "workers": cfg.workers,
                                              "catalog": str(out / "catalog.fits"),
                                              "catalog_ecsv": str(out / "catalog.ecsv")})
