"""``galmoss-auto run``: raw cutouts in, a catalog of fitted Sérsic parameters out.

Stages, per chunk of ``chunk_size`` galaxies::

    read FITS (+ its SIGMA/PSF/MASK extensions, header zero-point, pixel scale, SATURATE)
    -> sky measured, sigma estimated if absent -> sep masker -> sep initializer  (DataLoader workers)
    -> learned masker / initializer, batched on the torch device             (main process)
    -> fitter: galaxy + sky (``--sky``), batched, on the GPU when present       (main process)
    -> shard: catalog rows + masks (+ fitted neighbours) written atomically    (main process)

The sky is part of the model by default (``--sky flat``; ``tilted`` adds a gradient;
``subtract`` removes the measured level before the fit; ``none`` trusts the image to be
sky-subtracted), started from the background measured off the sources.  Every stage sees the
same image; the sep stages subtract the measured sky for detection.

Nothing holds more than the chunks in flight, and every finished chunk is on disk, so an
interrupted run continues with ``resume=True`` and redoes no finished galaxy.  The output
directory is locked while a run writes into it (a second run into it exits with an error);
``run_config.json`` records the settings and a hash of the input records, so a resume with an
edited manifest is refused, and the same manifest by another path is accepted.  At the end the
shards are merged into ``catalog.fits`` and ``catalog.ecsv`` (each id once, input order),
``neighbours.fits`` when neighbours were fitted, and ``run.json`` records the settings,
versions, device, checkpoints (name, sha256), per-stage timings and flag counts.

Catalog columns: those of :func:`galmoss_auto.fitting.fit` (``id``, ``sersic_<p>``,
``sersic_<p>_err``, the sky ``sky_sky``/``sky_sky_err`` (image units per pixel; with
``tilted`` also ``sky_dsky_dx``, ``sky_dsky_dy``), ``chi2_nu``, ``n_iter``, ``flags``, ...),
then what the stages did: ``init_sersic_<p>`` (the initial guess), ``init_method`` and
``mask_method`` (which stage ran for that row), ``init_concentration``, ``init_kron_flux``,
``mask_n_objects`` (sep detections; -1 without sep), ``mask_n_masked`` (pixels the masker
masked), ``mask_frac`` (fraction of pixels excluded from the fit), ``mask_central_snr`` (the
sep masker's isophotal S/N of the target; below 5: NO_CENTRAL_DETECTION), ``sky_level``, ``sky_rms``
(measured background, image units), ``sigma_estimated``, ``sigma_gain`` (the gain, e-/image
unit, whose photon noise an estimated sigma map holds; NaN: none, or a sigma map given),
``psf_source``, ``sigma_source``, ``gain_source``, ``zeropoint_source``, ``pixel_scale_source``
(``manifest``, ``file``, ``extension``,
``header``, ``option``, ``survey``, ``estimated`` or ``none``), ``n_saturated`` (pixels masked
as saturated), ``message`` (why a stage failed or what is doubtful), ``source`` (the image).

The model is one Sérsic (``sersic_<p>`` columns) unless ``--model`` (``RunConfig.model``: a
YAML/TOML model description or a GALFIT feedme, whose components, fixed values, ties and bounds
are used; a feedme's starting values and image settings are not, since the starts come from the
stages) or the ``model`` argument of :func:`run` names another; its columns are then
``<component>_<p>``.  Its starting values come from the initializer's single-Sérsic start by the
bulge + disk rule (:func:`galmoss_auto.initnet.bulge_disk.multi_component_start`; the
``init_sersic_<p>`` columns keep that start), and each of its positioned components stays within
:data:`TARGET_WINDOW` px of its start unless the model gives it a window.

Several processes can share one run (``RunConfig.rank`` / ``world_size``): each fits one
contiguous block of the input into its own shards under its own lock; the launcher calls
:func:`merge_run` once they are all done.
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
from galmoss_auto.fitting.cutout import psf_fwhm_px
from galmoss_auto.fitting.dataset import CutoutFailure, cutout_loader
from galmoss_auto.fitting.flags import Flag
from galmoss_auto.fitting.model import sky_component
from galmoss_auto.initnet.base import PARAMS, get_initializer
from galmoss_auto.initnet.bulge_disk import multi_component_start
from galmoss_auto.pipelines.config import RESULT_KEY_ABSENT, RunConfig, parse_weights, survey_defaults
from galmoss_auto.pipelines.inputs import InputError, apply_defaults, inputs_hash, read_inputs
from galmoss_auto.pipelines.prepare import BatchStages, Prepared, Preparer
from galmoss_auto.pipelines.products import render_products
from galmoss_auto.pipelines.progress import Progress
from galmoss_auto.pipelines.record import catalog_counts, write_record
from galmoss_auto.pipelines.shards import (LockError, OutputLock, ShardStore, atomic_write_table,
                                           fill_missing)

__all__ = ["run", "merge_run", "run_model", "read_run_model", "model_digest", "RunError", "COMPONENT",
           "CRASH_ENV"]

#: The default one-component model's component name (catalog prefix).
COMPONENT = "sersic"
#: Half-width (px) of the box around its start that the default target's centre stays in: run's
#: starts lie on the target (the initializer measures it at the cutout centre), and a faint
#: target left free can slide tens of pixels to another source or off the cutout.
TARGET_WINDOW = 5.0
#: Test hook: after this many shards the process dies with os._exit, as under kill -9.
CRASH_ENV = "GALMOSS_AUTO_CRASH_AFTER_SHARDS"
_OUTPUTS = ("shards", "masks", "panels", "blocks", "psf", "catalog.fits", "catalog.ecsv",
            "neighbours.fits", "run.json", "run_config.json")
#: run stage name -> model-zoo stage name, and the learned default of ``auto``.
_LEARNED = {"mask": ("automask", "maskrcnn"), "init": ("initnet", "initnet")}


class RunError(RuntimeError):
    """The run cannot start or continue (bad settings, a clash with an earlier run)."""


def _usable_out(out: Path) -> None:
    """Create ``out`` (and parents) or raise RunError saying why it cannot be used."""
    if out.exists() and not out.is_dir():
        raise RunError(f"{out}: --out exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"{out}: cannot create the output directory ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise RunError(f"{out}: the output directory is not writable")


def read_run_model(path, stream=None):
    """The :class:`~galmoss_auto.fitting.Model` of a ``--model`` file (YAML/TOML model
    description or GALFIT feedme; :func:`galmoss_auto.fitting.modelspec.load_model_file`).  A
    feedme's starting values and image settings are not used (``run``'s stages give them; a
    note says so).  Raises :class:`RunError` naming the file when it cannot be used."""
    from galmoss_auto.fitting.modelspec import ModelSpecError, load_model_file
    if not Path(path).is_file():
        raise RunError(f"--model {path}: no such file")
    try:
        model, init, options = load_model_file(path)
    except (ModelSpecError, ValueError, KeyError, OSError) as exc:
        raise RunError(f"--model {path}: {exc}") from None
    if (init or options) and stream is not None:
        stream.write(f"galmoss-auto: --model {path}: its components, fixed values, ties and bounds "
                     "are used; its starting values and image settings are not (run's "
                     "initializer starts every galaxy)\n")
    return model


def model_digest(model) -> str | None:
    """What a resumed run compares to know the model is unchanged: None for the default
    single Sérsic (also what a run written before ``--model`` existed had), else a hash of the
    components (name, kind), fixed values, ties, bounds and windows."""
    if model is None:
        return None
    import hashlib
    desc = {"components": [[c.name, type(c).__name__] for c in model.components],
            "fixed": {k: v for k, v in sorted(model.fixed.items())},
            "ties": sorted(repr(t) for t in model.ties),
            "bounds": {k: list(v) for k, v in sorted(model.bounds.items())},
            "windows": dict(sorted(model.windows.items()))}
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _prepare_out_dir(cfg: RunConfig, store: ShardStore, digest: str, model_hash: str | None = None) -> None:
    out = Path(cfg.out)
    cfg_path = out / "run_config.json"
    if cfg.overwrite and cfg.rank == 0:
        for name in _OUTPUTS:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    if store.exists() and not cfg.resume and cfg.world_size == 1:
        raise RunError(f"{out} already holds the results of a run; use --resume to continue it "
                       "or --overwrite to start over")
    settings = {**json.loads(json.dumps(cfg.result_settings())), "inputs_hash": digest,
                "model_hash": model_hash}
    if cfg.resume and store.exists():
        if not cfg_path.is_file():
            raise RunError(f"{cfg_path}: missing, so the earlier run's settings are unknown; "
                           "use --overwrite to start over")
        before = json.loads(cfg_path.read_text())
        if before.get("inputs_hash") != digest:
            raise RunError(f"cannot resume {out}: the input ({cfg.input}) differs from the earlier "
                           "run's (ids, files or per-row values changed); use --overwrite to "
                           "start over or another --out")
        before = {**RESULT_KEY_ABSENT, **before}
        diff = sorted(k for k in settings if k != "inputs_hash" and before.get(k) != settings[k])
        if diff:
            raise RunError(f"cannot resume {out}: settings differ from the earlier run: "
                           + ", ".join(f"{k} was {before.get(k)!r}, now {settings[k]!r}" for k in diff))
    tmp = cfg_path.with_name(f".run_config.json.tmp{os.getpid()}")
    tmp.write_text(json.dumps(settings, indent=2) + "\n")
    os.replace(tmp, cfg_path)


def _pick_device(device):
    import torch
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def run_model(model=None, sky: str = "flat"):
    """The model ``run`` fits: ``model`` (default one Sérsic named ``sersic``), each of its
    positioned components with no window of its own kept within :data:`TARGET_WINDOW` px of its
    start, plus a sky component named ``sky`` (FlatSky for ``sky="flat"``, TiltedSky for
    ``"tilted"``) unless it already has one; ``"subtract"`` and ``"none"`` add nothing."""
    from galmoss_auto.fitting.model import Model, default_model, with_sky
    d = model if model is not None else default_model()
    windows = dict(d.windows)
    for c in d.components:
        if {"x", "y"} <= {spec.name for spec in c.param_specs}:
            windows.setdefault(c.name, TARGET_WINDOW)
    base = Model(d.components, fixed=d.fixed, ties=d.ties, bounds=d.bounds, windows=windows,
                 auxiliary=d.auxiliary, growth=d.growth)
    return with_sky(base, sky if sky in ("flat", "tilted") else "none")


def _failure_table(failures: list[CutoutFailure], model) -> Table:
    """The fitter's own bad-input rows (NaN parameters, BAD_INPUT), plus message and source."""
    from galmoss_auto.fitting.catalog import bad_input_rows
    table = bad_input_rows(model, [f.id for f in failures])
    table["flags"] = np.array([int(f.flags) | int(Flag.BAD_INPUT) for f in failures], np.int64)
    table["message"] = [f.message for f in failures]
    table["source"] = [f.source for f in failures]
    return table


_COLUMN_DEFAULTS = {"mask_n_objects": -1, "mask_n_masked": 0, "sigma_estimated": False,
                    "message": "", "mask_method": "", "mask_central_class": "", "init_method": "", "psf_source": "",
                    "sigma_source": "", "gain_source": "", "zeropoint_source": "", "pixel_scale_source": "",
                    "n_saturated": 0}


def _stage_columns(prepared: list[Prepared]) -> Table:
    """``init_sersic_*`` and the stages' own columns, one row per prepared galaxy."""
    cols = {}
    for p in PARAMS:
        cols[f"init_{COMPONENT}_{p}"] = np.array([g.init.params[p] for g in prepared], np.float64)
    keys = []
    for g in prepared:
        keys += [k for k in g.columns if k not in keys]
    for k in keys:
        values = [g.columns.get(k, _COLUMN_DEFAULTS.get(k, np.nan)) for g in prepared]
        if any(isinstance(v, str) for v in values):
            cols[k] = np.array([str(v) for v in values])
        else:
            cols[k] = np.array(values)
    cols["source"] = np.array([g.cutout.source for g in prepared])
    return Table(cols)


def _fit_chunk(prepared: list[Prepared], cfg: RunConfig, device, model):
    """Fit one chunk; returns (catalog rows, fitted-neighbours table, empty when none)."""
    from galmoss_auto.fitting.neighbours import fit_with_neighbours
    single = {p: np.array([g.init.params[p] for g in prepared], np.float64) for p in PARAMS}
    # the single-Sérsic start spread over the model's components (one Sérsic: as it is)
    init = multi_component_start(model, single)
    sky = sky_component(model)
    if sky is not None:
        # started from the background measured off the sources
        init[f"{sky.name}_sky"] = np.array([float(getattr(g.cutout.meta.get("sky"), "level", 0.0))
                                            for g in prepared])
    kwargs = {"method": cfg.method, "errors": cfg.errors, "device": device}
    if cfg.batch_size is not None:
        kwargs["batch_size"] = cfg.batch_size
    cutouts = [g.cutout for g in prepared]
    # a survey stamp is cut around its target: a fit that ends off the centre is swapped with
    # the neighbour found there, or flagged (fit_with_neighbours' centred)
    table, neighbours_table = fit_with_neighbours(cutouts, init, [g.neighbours for g in prepared], model,
                                                  search=cfg.residual_search, centred=True, **kwargs)
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
    return table, neighbours_table


def _survey_name(survey: str | None) -> str | None:
    """The preset name a ``--survey`` value stands for: a TOML file's ``name`` (``train`` registers
    its checkpoints under that name), a built-in name as it is."""
    if survey is None or not str(survey).endswith(".toml"):
        return survey
    from galmoss_auto.data_scripts.surveys import load_survey
    return load_survey(survey).name


def _learned_stage(stage: str, cfg: RunConfig, weights: dict, notes: list):
    """(registered name, ResolvedCheckpoint) for ``stage`` ("mask" | "init"), or (None, None)
    when the sep / given stage runs.  Raises RunError when a learned stage is asked for
    explicitly and cannot run."""
    zoo_stage, learned = _LEARNED[stage]
    choice = getattr(cfg, stage)
    wanted = choice == "auto" or choice == learned
    if not wanted:
        return None, None
    given, bare = weights.get(zoo_stage), weights.get("*")
    survey = _survey_name(cfg.survey)
    from galmoss_auto.models import resolve_checkpoint
    try:
        if given is None and bare is not None:
            try:
                ckpt = resolve_checkpoint(zoo_stage, survey, cfg.band, zoo=cfg.zoo, weights=bare)
                notes.append(f"--weights {bare}: used for {zoo_stage}")
            except Exception as exc:  # a bare choice made for the other stage
                notes.append(f"--weights {bare}: not for {zoo_stage} ({exc})")
                ckpt = resolve_checkpoint(zoo_stage, survey, cfg.band, zoo=cfg.zoo)
        else:
            ckpt = resolve_checkpoint(zoo_stage, survey, cfg.band, zoo=cfg.zoo, weights=given)
    except Exception as exc:  # ResolveError, a damaged registry, ...
        raise RunError(f"{zoo_stage} checkpoint: {exc}") from None
    if ckpt is None:
        if choice == learned:
            raise RunError(f"--{stage} {learned}: no {zoo_stage} checkpoint for survey "
                           f"{survey!r} band {cfg.band!r}; give --weights NAME|FILE, --zoo DIR, "
                           "or install one with `galmoss-auto weights`")
        notes.append(f"{stage}: no {zoo_stage} checkpoint for survey {survey!r} band "
                     f"{cfg.band!r}; sep used")
        return None, None
    # importing the stage registers it under its name (torchvision is loaded only when needed)
    if stage == "mask":
        import galmoss_auto.automask.predict  # noqa: F401
    else:
        import galmoss_auto.initnet.predict  # noqa: F401
    return learned, ckpt


def _compat_check(entry: dict):
    """callable(cutout) -> problems of using a checkpoint with ``entry`` on that cutout."""
    from galmoss_auto.models import check_compatibility

    def check(cutout):
        scale = cutout.pixel_scale
        fwhm = psf_fwhm_px(cutout.psf, cutout.psf_oversampling)
        fwhm_arcsec = fwhm * scale if (fwhm is not None and scale is not None) else None
        return check_compatibility(entry, pixel_scale=scale, psf_fwhm_arcsec=fwhm_arcsec,
                                   size=tuple(cutout.shape))
    return check


def _with_checkpoint(getter, name: str, ckpt):
    """``getter(name, checkpoint=PATH, sha256=...)``: the registry's hash pinned where the
    factory takes it, else ``checkpoint=PATH`` alone (the contract's minimum)."""
    try:
        return getter(name, checkpoint=str(ckpt.path), sha256=ckpt.sha256)
    except TypeError:
        return getter(name, checkpoint=str(ckpt.path))


def build_stages(cfg: RunConfig, stream):
    """(masker, initializer, BatchStages, {stage: checkpoint record}, notes)."""
    detect_cfg = DetectConfig(thresh=cfg.detect_thresh)
    try:
        weights = parse_weights(cfg.weights)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    notes: list[str] = []
    checkpoints, checks = {}, {}
    stages = {}
    for stage in ("mask", "init"):
        name, ckpt = _learned_stage(stage, cfg, weights, notes)
        if ckpt is not None:
            checkpoints[_LEARNED[stage][0]] = ckpt.record()
            problems = []
            if cfg.pixel_scale is not None:
                from galmoss_auto.models import check_compatibility
                problems = check_compatibility(ckpt.entry, pixel_scale=cfg.pixel_scale)
            if problems and cfg.strict:
                raise RunError(f"{ckpt.name}: " + "; ".join(problems) + " (refused under --strict)")
            checks[stage] = _compat_check(ckpt.entry)
        stages[stage] = (name, ckpt)
    bare = weights.get("*")
    if bare is not None and not any(n == f"--weights {bare}: used for {st}" for n in notes
                                    for st in ("automask", "initnet")):
        if any(getattr(cfg, st) in ("auto", _LEARNED[st][1]) for st in ("mask", "init")):
            raise RunError(f"--weights {bare}: not usable for any stage: "
                           + "; ".join(n for n in notes if n.startswith(f"--weights {bare}")))
    sep_masker = get_masker("sep", detect=detect_cfg, dilate=cfg.dilate)
    sep_init = get_initializer("sep", detect=detect_cfg)
    try:
        name, ckpt = stages["mask"]
        if ckpt is not None:
            masker = _with_checkpoint(get_masker, name, ckpt)
        elif cfg.mask in ("auto", "sep"):
            masker = sep_masker
        else:
            masker = get_masker(cfg.mask)
        name, ckpt = stages["init"]
        if ckpt is not None:
            initializer = _with_checkpoint(get_initializer, name, ckpt)
        elif cfg.init in ("auto", "sep"):
            initializer = sep_init
        else:
            initializer = get_initializer(cfg.init, detect=detect_cfg)
    except (ValueError, OSError, TypeError) as exc:
        raise RunError(str(exc)) from None
    batch = BatchStages(masker, initializer, sep_masker, sep_init, checks, cfg.strict,
                        warn=lambda msg: stream.write(f"galmoss-auto: warning: {msg}\n"))
    return masker, initializer, batch, checkpoints, notes


def attach_defaults(records: list[dict], cfg: RunConfig, psf_dir) -> list[dict]:
    """The run's fall-backs on ``records`` (in place): its options first, then its survey
    preset's (whose PSF is written into ``psf_dir``)."""
    options = {k: getattr(cfg, k) for k in ("psf", "zeropoint", "pixel_scale", "gain",
                                            "saturation", "band") if getattr(cfg, k) is not None}
    apply_defaults(records, options, "option")
    return apply_defaults(records, survey_defaults(cfg.survey, cfg.band, psf_dir), "survey")


def iter_prepared(cfg: RunConfig, ids=None, stream=None):
    """Everything ``run`` does to ``cfg.input``'s galaxies before the fit, and nothing after,
    one chunk (``cfg.chunk_size``, default 128 cutouts) at a time: yields ``(prepared,
    failures)`` per chunk.  The same reader and defaults, noise step, masker (``cfg.mask``,
    learned where a checkpoint resolves) and sky mode as ``run``; the initializer is sep's
    (cheap; the caller wants the cutouts).

    ``ids``: only these galaxies (default all).  ``prepared`` are :class:`Prepared` galaxies
    (their initializer's view is :func:`galmoss_auto.pipelines.prepare.init_view`),
    ``failures`` the cutouts that could not be read or measured.  Used by training on real
    cutouts, so that a network learns from cutouts prepared exactly as ``run`` prepares them;
    a chunk at a time, so that any number of cutouts can be prepared.  Raises
    :class:`RunError` for unusable settings or input; ``cfg.out`` is not written to."""
    import dataclasses
    import tempfile

    stream = stream if stream is not None else sys.stderr
    try:
        records = read_inputs(cfg.input)
    except (InputError, ValueError, OSError) as exc:
        raise RunError(str(exc)) from None
    if ids is not None:
        wanted = {str(i) for i in ids}
        records = [r for r in records if str(r["id"]) in wanted]
    cfg = dataclasses.replace(cfg, init="sep")
    masker, initializer, batch_stages, _, notes = build_stages(cfg, stream)
    for note in notes:
        stream.write(f"galmoss-auto: {note}\n")
    device = _pick_device(cfg.device)
    with tempfile.TemporaryDirectory(prefix="galmoss-prepare-") as psf_dir:
        try:
            attach_defaults(records, cfg, Path(psf_dir))
        except (InputError, ValueError) as exc:
            raise RunError(str(exc)) from None
        # the survey PSF file is read while the loader runs, inside the temporary folder
        for chunk in cutout_loader(records, batch_size=cfg.chunk_size or 128, num_workers=cfg.workers,
                                   transform=Preparer(masker, initializer, cfg.sky)):
            batch_stages(chunk, device)
            yield ([g for g in chunk if isinstance(g, Prepared)],
                   [g for g in chunk if isinstance(g, CutoutFailure)])


def prepare_training_cutouts(real, options: dict | None = None, ids=None):
    """:func:`iter_prepared` for training on real cutouts, as a stream of :class:`Prepared`
    galaxies (a chunk in memory at a time): ``real`` is anything ``run`` reads, ``options``
    the :class:`RunConfig` settings to prepare it with (progress off by default).  Cutouts
    that cannot be read, or whose masker failed, are left out, and named in one warning once
    the stream is exhausted."""
    import tempfile
    import warnings

    settings = {"progress": False, **(options or {})}
    left = []
    # iter_prepared never writes its output folder, but a RunConfig needs one
    with tempfile.TemporaryDirectory(prefix="galmoss-prepare-") as out:
        for prepared, failures in iter_prepared(RunConfig(input=str(real), out=out, **settings), ids=ids):
            left += [f"{f.id}: {f.message}" for f in failures]
            for g in prepared:
                if g.flags & int(Flag.MASK_FAILED):
                    left.append(f"{g.id}: its masker failed ({g.columns.get('message', '')})")
                else:
                    yield g
    if left:
        warnings.warn(f"{real}: {len(left)} real cutout(s) left out of training: " + "; ".join(left[:5])
                      + (" ..." if len(left) > 5 else ""), stacklevel=2)


def training_cutouts_key(real, options: dict | None = None, **extra) -> str:
    """sha256 (hex) of what real training cutouts are prepared from: what ``real`` lists
    (:func:`~galmoss_auto.pipelines.inputs.inputs_hash` of its records, with each named file's
    size and modification time, so that a rewritten file counts), the preparation
    ``options`` and the caller's ``extra`` settings (labels, stage, seed, ...; JSON values).
    A prepared item store whose key differs is prepared again."""
    import hashlib

    try:
        records = read_inputs(str(real))
    except (InputError, ValueError, OSError) as exc:
        raise RunError(str(exc)) from None
    stats = []
    for rec in records:
        for value in rec.values():
            if isinstance(value, str) and os.path.isfile(value):
                st = os.stat(value)
                stats.append([value, st.st_size, st.st_mtime_ns])
    h = hashlib.sha256(inputs_hash(records).encode())
    h.update(json.dumps([stats, options or {}, extra], sort_keys=True, default=str).encode())
    return h.hexdigest()


def merge_run(out, order: list[str] | None = None) -> Table:
    """Merge every finished shard of ``out`` (all ranks) into ``catalog.fits`` and
    ``catalog.ecsv`` (each id once, rows in ``order`` where given), and the fitted neighbours
    into ``neighbours.fits`` when there are any.  Returns the catalog.  A launcher of several
    ranks calls it once, after all of them finished."""
    out = Path(out)
    store = ShardStore(out)
    catalog = store.merge(order)
    atomic_write_table(catalog, out / "catalog.fits", "fits")
    atomic_write_table(catalog, out / "catalog.ecsv", "ascii.ecsv")
    nbrs = store.merge_neighbours({str(i) for i in catalog["id"]})
    if nbrs is not None:
        atomic_write_table(nbrs, out / "neighbours.fits", "fits")
    return catalog


def _block(items: list, rank: int, world_size: int) -> list:
    """The ``rank``-th of ``world_size`` contiguous, near-equal blocks of ``items``."""
    n = len(items)
    lo, hi = rank * n // world_size, (rank + 1) * n // world_size
    return items[lo:hi]


def run(cfg: RunConfig, model=None, stream=None) -> dict:
    """Run the pipeline; returns the run record (also written to ``OUT/run.json``, or
    ``OUT/run-r<rank>.json`` for one rank of several).

    ``model``: a :class:`galmoss_auto.fitting.Model` (None: ``cfg.model``'s file, else one
    Sérsic named ``sersic``); the ``--sky`` component is added to it (see :func:`run_model`).
    Raises :class:`RunError` for unusable settings or input (the message names the file).
    """
    stream = stream if stream is not None else sys.stderr
    t_start = time.perf_counter()
    out = Path(cfg.out)
    if cfg.model is not None:
        if model is not None:
            raise RunError("two models: give RunConfig.model (--model) or run(model=...), not both")
        model = read_run_model(cfg.model, stream)
    try:
        records = read_inputs(cfg.input)          # before touching the output directory
    except (InputError, ValueError, OSError) as exc:
        raise RunError(str(exc)) from None
    digest = inputs_hash(records)
    _usable_out(out)
    multi = cfg.world_size > 1
    lock = OutputLock(out, f".lock-r{cfg.rank}" if multi else ".lock")
    try:
        lock.acquire()
    except LockError as exc:
        raise RunError(str(exc)) from None
    except OSError as exc:
        raise RunError(f"{out}: cannot write the lock file ({exc.strerror or exc})") from None
    try:
        return _run_locked(cfg, model, stream, records, digest, t_start)
    finally:
        lock.release()


def _run_locked(cfg: RunConfig, model, stream, records, digest, t_start) -> dict:
    out = Path(cfg.out)
    multi = cfg.world_size > 1
    store = ShardStore(out, tag=f"r{cfg.rank}" if multi else None)
    try:
        _prepare_out_dir(cfg, store, digest, model_digest(model))
        attach_defaults(records, cfg, out / "psf")
    except (InputError, ValueError) as exc:
        raise RunError(str(exc)) from None
    except OSError as exc:
        raise RunError(f"{out}: {exc.strerror or exc}") from None
    order = [r["id"] for r in records]
    store.clean_temporaries()
    mine = _block(records, cfg.rank, cfg.world_size)
    done = store.done_ids() if cfg.resume else set()
    todo = [r for r in mine if r["id"] not in done]

    masker, initializer, batch_stages, checkpoints, notes = build_stages(cfg, stream)
    for note in notes:
        stream.write(f"galmoss-auto: {note}\n")
    fit_model = run_model(model, cfg.sky)
    device = _pick_device(cfg.device)

    timings = dict.fromkeys(("read", "sigma", "mask", "init", "fit", "write", "products"), 0.0)
    progress = Progress(len(mine), done=len(mine) - len(todo), stream=stream,
                        enabled=cfg.progress)
    crash_after = int(os.environ.get(CRASH_ENV, "0") or 0)
    index, written, panels = store.next_index(), 0, 0
    # on a GPU a chunk is one full fitter batch; on the CPU small shards resume at a finer grain
    chunk_size = cfg.chunk_size or (default_batch_size(device) if device.type == "cuda" else 128)
    loader = cutout_loader(todo, batch_size=chunk_size, num_workers=cfg.workers,
                           transform=Preparer(masker, initializer, cfg.sky))
    for chunk in loader:
        for g in chunk:
            for k, v in g.timings.items():
                timings[k] += v
        for k, v in (batch_stages(chunk, device) or {}).items():
            timings[k] += v
        prepared = [g for g in chunk if isinstance(g, Prepared)]
        failures = [g for g in chunk if isinstance(g, CutoutFailure)]
        parts, nbr_table = [], None
        t0 = time.perf_counter()
        if prepared:
            fitted, nbr_table = _fit_chunk(prepared, cfg, device, fit_model)
            parts.append(fitted)
        timings["fit"] += time.perf_counter() - t0
        if failures:
            parts.append(_failure_table(failures, fit_model))
            for f in failures:
                stream.write(f"galmoss-auto: {f.id}: {f.message} (flagged BAD_INPUT)\n")
        table = parts[0] if len(parts) == 1 else fill_missing(
            vstack(parts, join_type="outer", metadata_conflicts="silent"))
        rank = {g.id: k for k, g in enumerate(chunk)}
        table = table[np.argsort([rank[str(i)] for i in table["id"]], kind="stable")]
        t0 = time.perf_counter()
        if prepared:
            panels += render_products(prepared, table, out, cfg.blocks, cfg.panels - panels,
                                      fit_model, device)
        timings["products"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        masks = None
        if cfg.save_masks and prepared:
            # bit 1: the input mask and unusable pixels; bit 2: the masker's own pixels.
            masks = [(g.id, (g.cutout.mask & ~g.auto_mask).astype(np.uint8)
                      | (g.auto_mask.astype(np.uint8) << 1)) for g in prepared]
        store.write(index, table, masks, nbr_table)
        timings["write"] += time.perf_counter() - t0
        index += 1
        written += 1
        progress.update(len(chunk))
        if crash_after and written >= crash_after:
            os._exit(137)
    progress.close()

    t0 = time.perf_counter()
    if multi:
        catalog = store.merge([r["id"] for r in mine], tag=store.tag) if store.shard_paths(store.tag) \
            else Table({"id": np.array([], str), "flags": np.array([], np.int64)})
    else:
        catalog = merge_run(out, order)
    timings["write"] += time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    n_new = len(todo)
    counts = catalog_counts(catalog, n_new, len(mine) - n_new)
    rate = {"galaxies_per_s_end_to_end": n_new / timings["total"] if timings["total"] > 0 else None}
    for k in ("read", "sigma", "mask", "init", "fit", "write"):
        rate[f"galaxies_per_s_{k}"] = n_new / timings[k] if timings[k] > 0 else None
    name = f"run-r{cfg.rank}.json" if multi else "run.json"
    extra = {"rates": rate, "workers": cfg.workers, "checkpoints": checkpoints,
             "stage_notes": notes, "inputs_hash": digest,
             "model": [f"{c.name}:{type(c).__name__}" for c in fit_model.components],
             "catalog": str(out / "catalog.fits"), "catalog_ecsv": str(out / "catalog.ecsv")}
    if (out / "neighbours.fits").exists():
        extra["neighbours"] = str(out / "neighbours.fits")
    return write_record(out / name, config=cfg.to_dict(), device=device, timings=timings,
                        counts=counts, extra=extra)
