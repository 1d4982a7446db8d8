"""``galmoss-auto train``: retrain the masker and the initial-guess network for a survey.

::

    galmoss-auto train --survey sdss|legacy|hsc|lsst|FILE.toml --band r --out ZOO
                       [--stage automask|initnet|all] [--n-train N] [--epochs E] [--seed S]
                       [--data SIMDIR] [--real CUTOUTS --labels CATALOG]
                       [--init-weights [STAGE=]NAME|FILE]
                       [--devices N] [--num-nodes M] [--accelerator cpu|gpu|auto]
                       [--precision 32-true|bf16-mixed|16-mixed] [--resume | --overwrite]

Steps, for each chosen stage (``all`` = automask then initnet):

1. **Data.** The training set is simulated from the survey preset (the simulator with the
   survey's pixel scale, PSF, depth and crowding) with ``--seed``, the held-out validation set
   with seed ``seed + 1000003`` (cutouts depend only on (seed, index), so the two never share
   a cutout).  Both are cached in ``ZOO/data/`` and reused by later calls with the same
   settings.  ``--data SIMDIR`` trains on an existing ``galmoss-auto simulate`` output instead
   (validation still simulated, unless SIMDIR holds ``train/`` and ``val/``).  ``--real
   CUTOUTS --labels CATALOG`` adds real cutouts with labels (a previous run's catalog, whose
   converged fits without a quality flag are used, or a user catalog) to the stage's data module;
   they are prepared once (as ``run`` prepares them, a chunk at a time) into
   ``ZOO/data/real-<stage>/`` and streamed from there, each rank reading its own share.
2. **Training** with one Lightning Trainer configuration for every stage: ``--devices`` x
   ``--num-nodes`` processes (DDP when > 1, gloo on the CPU, NCCL on GPUs), ``--precision``,
   ``default_root_dir = ZOO/lightning/<stage>``, a ``last.ckpt`` saved every epoch (``--resume``
   continues from it), CSV logs, a progress bar.  ``--init-weights`` starts the network from a
   checkpoint's weights (fine-tuning) instead of a random initialisation, in the checkpoint's
   architecture unless ``--arch`` is given.
3. **Evaluation** against sep on the held-out set (the stage's ``evaluate``).
4. **Export** (global rank 0 only): the inference weights and their registry entry into ZOO
   (the stage's ``export``; the entry's ``survey`` is the preset's ``name``, also for a TOML
   file; its ``training`` records the exact command, version, seed, size and preset), and ``ZOO/report/<stage>.md`` with the metrics table, loss curves and the
   stage's figures.

``galmoss-auto run --survey S --band B --zoo ZOO`` then uses the new weights.

Cost (defaults; the stages' ``DEFAULTS`` give n_train, epochs, batch size): see the README
section "Training for a new survey".  ``--n-train 600 --epochs 1`` is a smoke test of a few
minutes on 2 CPU cores.

Distributed: under torchrun / srun every rank runs this command with the same options; rank 0
simulates while the others wait for it, then all train; only rank 0 evaluates and writes ZOO.
Without a launcher, ``--devices N`` lets Lightning start the other N-1 processes itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import inspect
import json
import os
import re
import shlex
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from galmoss_auto import __version__
from galmoss_auto.models.resolve import training_range

__all__ = ["STAGES", "VAL_SEED_OFFSET", "TrainError", "TrainOptions", "add_parser", "train",
           "run_from_args", "main", "trainer_kwargs"]

#: Stage name -> module exposing DEFAULTS, build_module, build_datamodule, evaluate, export,
#: report_figures.  "all" trains them in this order.
STAGES = {"automask": "galmoss_auto.automask.lightning",
          "initnet": "galmoss_auto.initnet.lightning"}
#: Validation seed = training seed + this (a prime far beyond any realistic training count).
VAL_SEED_OFFSET = 1000003
#: Environment variable through which rank 0 hands its plan to the ranks Lightning starts.
PLAN_ENV = "GALMOSS_AUTO_TRAIN_PLAN"
PRECISIONS = ("64-true", "64", "32-true", "32", "bf16-mixed", "bf16", "16-mixed", "16",
              "bf16-true", "16-true")
_GPU_ONLY_PRECISIONS = ("16-mixed", "16", "16-true")


class TrainError(ValueError):
    """Unusable options or inputs; the CLI prints the message and exits 2."""


@dataclass
class TrainOptions:
    """The settings of one ``galmoss-auto train`` (see ``--help`` for each).

    n_train / n_val / epochs / batch_size / lr / arch / size: None = the stage's default
    (``DEFAULTS``; n_val without one: max(64, min(1000, n_train // 10)); size without one: 128).
    size: simulated cutout side in px (>= 32).
    workers: DataLoader processes per rank (-1: 0 on the CPU, min(8, cores/devices - 1) on GPUs).
    serve_bands: bands the exported checkpoints are registered for (None: ``[band]``; ``["all"]``:
        every band of the preset).  The training data is always simulated in ``band``.
    """

    survey: str
    band: str
    out: str
    serve_bands: list | None = None
    stages: list = field(default_factory=lambda: list(STAGES))
    n_train: int | None = None
    n_val: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    arch: str | None = None
    seed: int = 1
    size: int | None = None
    population: str = "sersic"
    artifacts: bool = False
    blend_prob: float | None = None
    data: str | None = None
    real: str | None = None
    labels: str | None = None
    init_weights: tuple = ()
    devices: int = 1
    num_nodes: int = 1
    accelerator: str = "auto"
    precision: str = "32-true"
    workers: int = -1
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    version: str = "1"


# --------------------------------------------------------------------------- command line

def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``train`` on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "train", help="retrain masker and initnet for a survey",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _arguments(p)
    p.set_defaults(func=run_from_args)
    return p


def _arguments(p: argparse.ArgumentParser) -> None:
    from galmoss_auto.pipelines.distributed import add_distributed_arguments
    p.add_argument("--survey", required=True, help="preset name (sdss, legacy, hsc, lsst) or a "
                   "survey .toml file (see data_scripts/surveys/sdss.toml)")
    p.add_argument("--band", required=True, help="band of the preset")
    p.add_argument("--out", required=True, metavar="ZOO", help="model zoo folder to write")
    p.add_argument("--serve-bands", dest="serve_bands", default=None, metavar="B1,B2|all",
                   help="bands the checkpoints are registered for (default: --band only; 'all': "
                        "every band of the preset; the data is simulated in --band)")
    p.add_argument("--stage", default="all", choices=[*STAGES, "all"],
                   help="which stage to train (default all: " + ", then ".join(STAGES) + ")")
    d = p.add_argument_group("data")
    d.add_argument("--n-train", dest="n_train", type=int, default=None,
                   help="simulated training cutouts (default: the stage's DEFAULTS)")
    d.add_argument("--n-val", dest="n_val", type=int, default=None,
                   help="held-out validation cutouts (default: the stage's, else n_train/10 "
                        "in [64, 1000])")
    d.add_argument("--seed", type=int, default=1, help="simulation and training seed (default 1)")
    d.add_argument("--size", type=int, default=None,
                   help="simulated cutout side in px (default: the stage's, else 128)")
    d.add_argument("--population", default="sersic", choices=["sersic", "bulge_disk", "mixed"],
                   help="central galaxies' profiles (default sersic)")
    d.add_argument("--artifacts", action="store_true",
                   help="also simulate bright-star halos, bad columns and cosmic rays")
    d.add_argument("--blend-prob", dest="blend_prob", type=float, default=None, metavar="P",
                   help="probability (0-1) that a simulated cutout has a close blend, a galaxy "
                        "overlapping the target (default: the stage's, automask 0.6; else the "
                        "simulator's 0.3)")
    d.add_argument("--data", default=None, metavar="SIMDIR",
                   help="train on this galmoss-auto simulate output instead of simulating")
    d.add_argument("--real", default=None, metavar="CUTOUTS",
                   help="real cutouts (as for run) to fine-tune on; needs --labels")
    d.add_argument("--labels", default=None, metavar="CATALOG",
                   help="labels for --real: a galmoss-auto run catalog (converged fits with no "
                        "quality flag are used; informational flags such as SIGMA_ESTIMATED "
                        "are allowed) or a catalog with id and sersic_<param> columns")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=None, help="epochs (default: the stage's)")
    t.add_argument("--batch-size", dest="batch_size", type=int, default=None,
                   help="samples per step and process (default: the stage's)")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default: the stage's)")
    t.add_argument("--arch", default=None, help="network architecture (default: the stage's)")
    t.add_argument("--precision", default="32-true", choices=PRECISIONS,
                   help="Lightning precision (default 32-true; bf16-mixed or 16-mixed on GPUs)")
    t.add_argument("--workers", type=int, default=-1,
                   help="DataLoader workers per process (default: 0 on the CPU, "
                        "min(8, cores/devices - 1) on GPUs)")
    t.add_argument("--version", default="1",
                   help="the checkpoint's version, part of its registry name (default 1): a new "
                        "training of a shipped checkpoint takes the next one")
    t.add_argument("--init-weights", dest="init_weights", action="append", default=[],
                   metavar="[STAGE=]NAME|FILE",
                   help="start the network from these weights instead of a random "
                        "initialisation: fine-tuning (e.g. the shipped checkpoint, with --real) "
                        "or a start from a related survey's network; a registry name or a "
                        ".safetensors file, STAGE automask or initnet (a bare one applies to "
                        "every stage it is for); the network trained is the checkpoint's "
                        "architecture unless --arch names another")
    t.add_argument("--resume", action="store_true",
                   help="continue from ZOO/lightning/<stage>/checkpoints/last.ckpt")
    t.add_argument("--overwrite", action="store_true",
                   help="discard an earlier training's checkpoints and logs in ZOO")
    t.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_distributed_arguments(p.add_argument_group("scale-out (Lightning DDP)"))


def options_from_args(args) -> TrainOptions:
    names = {f.name for f in dataclasses.fields(TrainOptions)}
    kw = {k: v for k, v in vars(args).items() if k in names}
    kw["stages"] = list(STAGES) if args.stage == "all" else [args.stage]
    if kw.get("serve_bands"):
        kw["serve_bands"] = [b.strip() for b in kw["serve_bands"].split(",") if b.strip()]
    return TrainOptions(**kw)


def run_from_args(args) -> int:
    """The ``train`` subcommand: 0 done, 2 bad options (message on stderr)."""
    try:
        summary = train(options_from_args(args))
    except TrainError as exc:
        print(f"galmoss-auto train: error: {exc}", file=sys.stderr)
        return 2
    for name, s in (summary or {}).items():
        print(f"galmoss-auto train: {name}: {s['zoo_file']} ({s['train_s']:.0f} s training, "
              f"{s['samples_per_s']:.1f} samples/s); report {s['report']}")
    return 0


def main(argv=None) -> int:
    """``python -m galmoss_auto.pipelines.train ...`` (same options as ``galmoss-auto train``)."""
    parser = argparse.ArgumentParser(prog="galmoss-auto train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _arguments(parser)
    return run_from_args(parser.parse_args(argv))


# --------------------------------------------------------------------------- checks

def _load_stage(name: str):
    try:
        mod = importlib.import_module(STAGES[name])
    except ImportError as exc:
        raise TrainError(f"stage {name}: {STAGES[name]} cannot be imported ({exc})") from None
    missing = [a for a in ("DEFAULTS", "build_module", "build_datamodule", "evaluate", "export",
                           "report_figures") if not hasattr(mod, a)]
    if missing:
        raise TrainError(f"stage {name}: {STAGES[name]} lacks {', '.join(missing)}")
    return mod


def _serve_bands(opts: TrainOptions, survey) -> list:
    """The bands the exported checkpoints serve: ``--serve-bands`` (``all``: the preset's), else
    ``[--band]``; the trained band always among them."""
    if not opts.serve_bands:
        return [opts.band]
    if list(opts.serve_bands) == ["all"]:
        return list(survey.bands)
    bands = list(dict.fromkeys(opts.serve_bands))
    if opts.band not in bands:
        raise TrainError(f"--serve-bands {','.join(bands)} must include the trained band {opts.band}")
    return bands


def _positive(name: str, value, minimum=1):
    if value is not None and value < minimum:
        raise TrainError(f"{name} must be >= {minimum}, got {value}")


def _check(opts: TrainOptions):
    """Validate everything that can be checked before any work; returns the Survey preset."""
    from galmoss_auto.data_scripts.surveys import SurveyError, load_survey
    from galmoss_auto.pipelines.distributed import resolve_accelerator
    try:
        survey = load_survey(opts.survey)
        survey.band(opts.band)
        for b in _serve_bands(opts, survey):
            survey.band(b)
    except SurveyError as exc:
        raise TrainError(str(exc)) from None
    for name in ("n_train", "n_val", "epochs", "batch_size", "devices", "num_nodes"):
        _positive("--" + name.replace("_", "-"), getattr(opts, name))
    if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z.]*", str(opts.version)):
        raise TrainError(f"--version must be letters, digits and dots (it names the checkpoint "
                         f"file), got {opts.version!r}")
    if opts.size is not None:
        _positive("--size", opts.size, 32)
    if opts.blend_prob is not None and not 0.0 <= opts.blend_prob <= 1.0:
        raise TrainError(f"--blend-prob must be in [0, 1], got {opts.blend_prob}")
    if opts.blend_prob is not None and opts.data is not None:
        raise TrainError("--blend-prob sets how training data is simulated; --data gives data "
                         "already simulated (simulate it with galmoss-auto simulate --blend-prob)")
    if opts.lr is not None and not opts.lr > 0:
        raise TrainError(f"--lr must be > 0, got {opts.lr}")
    unknown = [s for s in opts.stages if s not in STAGES]
    if unknown or not opts.stages:
        raise TrainError(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)} or all")
    if (opts.real is None) != (opts.labels is None):
        raise TrainError("--real and --labels go together: real cutouts need labels "
                         "(a previous run's catalog or a user catalog)")
    for key in ("real", "labels"):
        path = getattr(opts, key)
        if path is not None and not Path(path).exists() and not any(c in path for c in "*?["):
            raise TrainError(f"--{key} {path}: no such file or directory")
    if opts.data is not None:
        from galmoss_auto.data_scripts.shards import shard_files
        try:
            shard_files(_split_dir(Path(opts.data), "train"))
        except FileNotFoundError as exc:
            raise TrainError(f"--data: {exc} (give a galmoss-auto simulate output folder)") from None
    if opts.resume and opts.overwrite:
        raise TrainError("--resume and --overwrite exclude each other")
    _start_weights(opts)
    if opts.precision not in PRECISIONS:
        raise TrainError(f"--precision must be one of {', '.join(PRECISIONS)}, got {opts.precision!r}")
    try:
        accelerator = resolve_accelerator(opts.accelerator)
    except ValueError as exc:
        raise TrainError(str(exc)) from None
    if accelerator == "cpu" and opts.precision in _GPU_ONLY_PRECISIONS:
        raise TrainError(f"--precision {opts.precision} needs a GPU; on the CPU use 32-true or "
                         "bf16-mixed")
    if accelerator == "gpu":
        import torch
        if opts.devices > torch.cuda.device_count():
            raise TrainError(f"--devices {opts.devices} but this node has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    _check_launch(opts)
    return survey, accelerator


def _check_launch(opts: TrainOptions) -> None:
    from galmoss_auto.pipelines.distributed import external_launch
    launch = external_launch()
    if launch is not None and os.environ.get(PLAN_ENV) is None:
        expected = opts.devices * opts.num_nodes
        if launch.world_size != expected:
            raise TrainError(f"{launch.launcher} started {launch.world_size} processes but "
                             f"--devices {opts.devices} --num-nodes {opts.num_nodes} make "
                             f"{expected}; give the launcher's per-node count as --devices")
    elif opts.num_nodes > 1 and os.environ.get(PLAN_ENV) is None:
        raise TrainError(f"--num-nodes {opts.num_nodes}: start one process per device on every "
                         "node with torchrun or srun (see the README)")


# --------------------------------------------------------------------------- data

def _split_dir(data: Path, split: str) -> Path:
    return data / split if (data / split / "shards").is_dir() else data


def shard_layout(n: int, world: int, max_shard: int = 128) -> tuple[int, int]:
    """(count, shard_size) for a simulated split read by ``world`` ranks: every rank gets the
    same number of equally full shards, since DDP ranks must take the same number of steps
    (a rank that runs out of batches first leaves the others waiting in an all-reduce).
    ``count`` >= n is n rounded up to that layout."""
    if world <= 1:
        return n, min(max_shard, n)
    per_rank = -(-n // world)
    shards_per_rank = -(-per_rank // max_shard)
    size = -(-per_rank // shards_per_rank)
    return size * shards_per_rank * world, size


def _sim_spec(opts, survey, n: int, seed: int, size: int) -> dict:
    """What a cached simulation must match to be reused (the simulator's run.json keys)."""
    return {"survey": survey.name, "band": opts.band, "seed": int(seed), "n": int(n),
            "size": int(size), "population": opts.population,
            "artifacts": bool(opts.artifacts), "blend_prob": _blend_prob(opts)}


def _with_blend(opts: TrainOptions, settings: dict) -> TrainOptions:
    """``opts`` with the stage's blend probability (``--blend-prob``, else its DEFAULTS')."""
    return dataclasses.replace(opts, blend_prob=settings.get("blend_prob"))


def _blend_prob(opts) -> float:
    """The simulated blend probability: ``--blend-prob``, else the simulator's default."""
    from galmoss_auto.data_scripts.contaminants import ContaminantConfig
    return float(opts.blend_prob if opts.blend_prob is not None else ContaminantConfig().blend_prob)


def _cached(folder: Path, spec: dict, shard_size: int) -> bool:
    path = folder / "run.json"     # written last by simulate(): its presence means complete
    if not path.is_file():
        return False
    meta = json.loads(path.read_text())
    n_shards = len(list((folder / "shards").glob("shard-*.npz")))
    return all(meta.get(k) == v for k, v in spec.items()) and n_shards == -(-spec["n"] // shard_size)


def _simulate(opts, survey, n: int, seed: int, size: int, folder: Path, shard_size: int) -> Path:
    from galmoss_auto.data_scripts.simulate import simulate
    spec = _sim_spec(opts, survey, n, seed, size)
    if _cached(folder, spec, shard_size):
        return folder
    if folder.exists():
        shutil.rmtree(folder)      # an interrupted or different simulation
    tmp = folder.with_name(folder.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    print(f"galmoss-auto train: simulating {n} {survey.name}/{opts.band} cutouts of {size} px "
          f"(seed {seed}) into {folder}", file=sys.stderr)
    try:
        simulate(survey, opts.band, n=n, seed=seed, out=tmp, size=size,
                 population=opts.population, artifacts=opts.artifacts, blend_prob=_blend_prob(opts),
                 fits=True, shards=True,
                 progress=opts.progress, shard_size=shard_size)
    except (ValueError, RuntimeError) as exc:
        raise TrainError(f"simulating {n} {survey.name}/{opts.band} cutouts: {exc}") from None
    tmp.rename(folder)
    return folder


def _prepare_data(opts, survey, n_train: int, n_val: int, size: int) -> tuple[Path, Path, dict]:
    """Training and validation folders (simulated or given) and their description."""
    label = f"{survey.name}-{opts.band}-{size}px-{opts.population}" \
            + ("-artifacts" if opts.artifacts else "") \
            + (f"-blend{opts.blend_prob:g}" if opts.blend_prob is not None else "")
    root = Path(opts.out) / "data"
    world = opts.devices * opts.num_nodes
    val_seed = opts.seed + VAL_SEED_OFFSET
    n_val, val_shard = shard_layout(n_val, world)
    if opts.data is not None:
        data = Path(opts.data)
        train_dir = _split_dir(data, "train")
        meta_path = train_dir / "run.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if meta and (meta.get("survey"), meta.get("band")) != (survey.name, opts.band):
            raise TrainError(f"--data {data}: simulated for {meta.get('survey')}/{meta.get('band')}"
                             f", not {survey.name}/{opts.band}")
        if (data / "val" / "shards").is_dir():
            val_dir = data / "val"
        else:
            if meta.get("seed") == val_seed:
                val_seed += VAL_SEED_OFFSET      # never validate on the training seed
            size = int(meta.get("size", size))
            val_dir = _simulate(opts, survey, n_val, val_seed, size,
                                root / f"{label}-s{val_seed}-n{n_val}", val_shard)
        n_train = int(meta.get("n", 0)) or None
        source = {"data": str(data)}
    else:
        n_train, train_shard = shard_layout(n_train, world)
        train_dir = _simulate(opts, survey, n_train, opts.seed, size,
                              root / f"{label}-s{opts.seed}-n{n_train}", train_shard)
        val_dir = _simulate(opts, survey, n_val, val_seed, size,
                            root / f"{label}-s{val_seed}-n{n_val}", val_shard)
        source = {}
    return train_dir, val_dir, {**source, "n_train": n_train, "n_val": n_val,
                                "val_seed": val_seed, "size": size}


# --------------------------------------------------------------------------- Lightning

def _stage_settings(opts: TrainOptions, stage) -> dict:
    """n_train, n_val, epochs, batch_size, lr, arch, size, blend_prob: the option, else the
    stage's (blend_prob None: the simulator's default)."""
    d = dict(stage.DEFAULTS)
    s = {k: getattr(opts, k) if getattr(opts, k) is not None else d.get(k)
         for k in ("n_train", "n_val", "epochs", "batch_size", "lr", "arch", "size", "blend_prob")}
    if s["n_train"] is None or s["epochs"] is None or s["batch_size"] is None:
        raise TrainError(f"stage DEFAULTS lack n_train/epochs/batch_size: {d}")
    if s["n_val"] is None:
        s["n_val"] = max(64, min(1000, s["n_train"] // 10))
    s["size"] = int(s["size"] or 128)
    return s


#: DEFAULTS keys that size the data or the loop, not the network (not passed to build_module)
_DATA_KEYS = ("n_train", "n_val", "epochs", "batch_size", "blend_prob")


def _hparams(stage, settings: dict) -> dict:
    """The settings build_module accepts: DEFAULTS but the data sizes, with the options'
    lr / arch / size."""
    hp = {k: v for k, v in stage.DEFAULTS.items() if k not in _DATA_KEYS}
    hp.update({k: settings[k] for k in ("lr", "arch", "size")
               if settings.get(k) is not None and (k != "size" or "size" in hp)})
    params = inspect.signature(stage.build_module).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return hp
    return {k: v for k, v in hp.items() if k in params}


def trainer_kwargs(opts: TrainOptions, accelerator: str, root: Path, epochs: int,
                   steps_per_epoch: int = 200, find_unused: bool = False) -> dict:
    """The one Trainer configuration every stage trains with (callbacks built fresh).
    ``steps_per_epoch`` (an estimate) sets the logging interval: ~20 points an epoch, so that
    even a smoke run draws a loss curve.  ``find_unused``: DDP's search for parameters a step
    did not use (a stage whose graph can skip a branch sets ``DDP_FIND_UNUSED_PARAMETERS``)."""
    from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.strategies import DDPStrategy
    world = opts.devices * opts.num_nodes
    strategy = "auto"
    if world > 1:
        strategy = DDPStrategy(process_group_backend="nccl" if accelerator == "gpu" else "gloo",
                               find_unused_parameters=find_unused, timeout=timedelta(hours=4))
    callbacks = [ModelCheckpoint(dirpath=root / "checkpoints", filename="last", save_top_k=1,
                                 every_n_epochs=1, enable_version_counter=False)]
    if opts.progress:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, 10 if sys.stderr.isatty() else 50)))
    return dict(accelerator=accelerator, devices=opts.devices, num_nodes=opts.num_nodes,
                strategy=strategy, precision=opts.precision, max_epochs=epochs,
                default_root_dir=str(root), callbacks=callbacks,
                logger=CSVLogger(str(root), name="logs"), enable_progress_bar=opts.progress,
                enable_model_summary=opts.progress, log_every_n_steps=max(1, min(50, steps_per_epoch // 20)),
                deterministic=False)


def _throughput_meter(batch_size: int):
    """A callback timing the training epochs without their validation loops (and without the
    sanity check, set-up and checkpoint restore), and counting this session's optimizer steps."""
    from lightning.pytorch.callbacks import Callback

    class Throughput(Callback):
        def __init__(self):
            self.seconds = self.wall = 0.0
            self.steps = self._step0 = 0
            self._t_fit = self._t_epoch = self._t_val = 0.0

        def on_train_start(self, trainer, pl_module):
            self._t_fit, self._step0 = time.perf_counter(), trainer.global_step

        def on_train_epoch_start(self, trainer, pl_module):
            self._t_epoch = time.perf_counter()

        def on_validation_start(self, trainer, pl_module):
            self._t_val = time.perf_counter()

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self.seconds -= time.perf_counter() - self._t_val

        def on_train_epoch_end(self, trainer, pl_module):
            self.seconds += time.perf_counter() - self._t_epoch

        def on_train_end(self, trainer, pl_module):
            self.wall = time.perf_counter() - self._t_fit
            self.steps = trainer.global_step - self._step0

        def samples(self, world_size: int) -> int:
            return self.steps * batch_size * world_size
    return Throughput()


def _workers(opts: TrainOptions, accelerator: str) -> int:
    if opts.workers >= 0:
        return opts.workers
    if accelerator == "cpu":
        return 0                # 2-core machines: the network, not reading, is the cost
    return max(0, min(8, (os.cpu_count() or 1) // opts.devices - 1))


def _global_rank(opts: TrainOptions) -> int:
    """Global rank of a process Lightning started (it sets NODE_RANK and LOCAL_RANK)."""
    return int(os.environ.get("NODE_RANK", 0)) * opts.devices + int(os.environ.get("LOCAL_RANK", 0))


def _stage_root(opts, name: str) -> Path:
    return Path(opts.out) / "lightning" / name


def _plan(opts, survey) -> dict:
    """Rank 0's preparation: folders checked or cleared, data simulated, resume points, the
    ``--init-weights`` checkpoints (resolved here, before ZOO is written, and read by every
    rank from the plan)."""
    plan = {"stages": {}}
    data_cache = {}
    starts = _start_weights(opts)
    for name in opts.stages:
        stage = _load_stage(name)
        s = _stage_settings(opts, stage)
        start = starts.get(name)
        if start is not None and opts.arch is None:
            # fine-tuning trains the checkpoint's own architecture unless --arch says otherwise
            s["arch"] = _start_arch(start) or s["arch"]
        root = _stage_root(opts, name)
        last = root / "checkpoints" / "last.ckpt"
        if opts.overwrite and root.exists():
            shutil.rmtree(root)
        elif last.is_file() and not opts.resume:
            raise TrainError(f"{last} exists from an earlier training: use --resume to continue "
                             "it or --overwrite to start over")
        ckpt = str(last) if opts.resume and last.is_file() else None
        if opts.resume and ckpt is None:
            print(f"galmoss-auto train: {name}: --resume but no {last}; training from scratch",
                  file=sys.stderr)
        key = (s["n_train"], s["n_val"], s["size"], s["blend_prob"])
        if key not in data_cache:
            data_cache[key] = _prepare_data(_with_blend(opts, s), survey, s["n_train"], s["n_val"],
                                            s["size"])
        train_dir, val_dir, data_info = data_cache[key]
        if opts.real:
            _prepare_real(opts, name, stage, train_dir, val_dir, s)
        plan["stages"][name] = {"settings": s, "train_dir": str(train_dir),
                                "val_dir": str(val_dir), "data": data_info, "ckpt": ckpt,
                                "start": None if start is None else {
                                    "name": start.name, "path": str(start.path),
                                    "sha256": start.sha256, "origin": start.origin,
                                    "architecture": start.entry.get("architecture", {})}}
    return plan


def _share_plan(opts, survey, accelerator: str) -> tuple[dict, int]:
    """The plan on every rank, and this process's global rank.

    torchrun / srun ranks start together: rank 0 prepares while the others wait in a
    broadcast (the process group made here is the one Lightning then uses).  Ranks that
    Lightning starts itself arrive after rank 0 prepared and read its plan file."""
    from galmoss_auto.pipelines.distributed import external_launch
    inherited = os.environ.get(PLAN_ENV)
    if inherited:
        return json.loads(Path(inherited).read_text()), _global_rank(opts)
    launch = external_launch()
    if launch is None:
        plan = _plan(opts, survey)
        if opts.devices * opts.num_nodes > 1:
            path = Path(opts.out) / "lightning" / f"plan-{os.getpid()}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(plan, indent=2) + "\n")
            os.environ[PLAN_ENV] = str(path)       # inherited by the ranks Lightning starts
        return plan, 0
    import torch
    import torch.distributed as dist
    if accelerator == "gpu":
        torch.cuda.set_device(launch.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if accelerator == "gpu" else "gloo",
                                init_method=f"tcp://{launch.main_address}:{launch.main_port}",
                                rank=launch.rank, world_size=launch.world_size,
                                timeout=timedelta(hours=4))
    box = [None]
    if launch.rank == 0:
        try:
            box = [{"plan": _plan(opts, survey)}]
        except TrainError as exc:
            box = [{"error": str(exc)}]
    dist.broadcast_object_list(box, src=0)
    if "error" in box[0]:
        raise TrainError(box[0]["error"] if launch.rank == 0 else f"rank 0: {box[0]['error']}")
    return box[0]["plan"], launch.rank


def _command() -> str:
    """The command line as typed, when this process parsed it (else reconstructed by caller)."""
    argv = list(sys.argv)
    if "train" not in argv[1:2]:
        return ""
    return shlex.join(["galmoss-auto", *argv[1:]])


def _canonical_command(opts: TrainOptions, name: str, s: dict, start: dict | None = None) -> str:
    args = ["galmoss-auto", "train", "--survey", opts.survey, "--band", opts.band,
            *(["--serve-bands", ",".join(opts.serve_bands)] if opts.serve_bands else []),
            "--stage", name, "--out", opts.out, "--n-train", str(s["n_train"]),
            "--n-val", str(s["n_val"]), "--epochs", str(s["epochs"]),
            "--batch-size", str(s["batch_size"]), "--seed", str(opts.seed),
            "--size", str(s["size"]), "--population", opts.population,
            "--precision", opts.precision]
    for key in ("lr", "arch"):
        if s.get(key) is not None:
            args += ["--" + key, str(s[key])]
    for key in ("data", "real", "labels"):
        if getattr(opts, key) is not None:
            args += ["--" + key, str(getattr(opts, key))]
    if start is not None:
        args += ["--init-weights", f"{name}={start['path'] if start['origin'] == 'file' else start['name']}"]
    if opts.artifacts:
        args.append("--artifacts")
    if opts.blend_prob is not None:
        args += ["--blend-prob", f"{opts.blend_prob:g}"]
    if opts.version != "1":
        args += ["--version", opts.version]
    return shlex.join(args)


def _preset_record(opts, survey, size: int) -> dict:
    rec = {"name": survey.name, "band": opts.band, "pixel_scale": survey.pixel_scale,
           "zeropoint": survey.zeropoint, "psf_model": survey.psf_model,
           "psf_fwhm_arcsec": survey.band(opts.band).psf_fwhm,
           "psf_fwhm_scatter": survey.psf_fwhm_scatter, "size": size,
           "population": opts.population, "artifacts": opts.artifacts}
    if opts.data is None:       # --data keeps its own in its run.json
        rec["blend_prob"] = _blend_prob(opts)
    path = Path(opts.survey)
    if path.suffix == ".toml" or path.is_file():
        rec["file"] = str(path.resolve())
        rec["file_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return rec


def train(opts: TrainOptions) -> dict | None:
    """Run ``galmoss-auto train``; returns, on global rank 0, ``{stage: summary}`` (zoo file,
    report, evaluation, timings), and None on the other ranks.  Raises :class:`TrainError`."""
    survey, accelerator = _check(opts)
    stages = {name: _load_stage(name) for name in opts.stages}
    own_plan = os.environ.get(PLAN_ENV) is None
    plan, rank = _share_plan(opts, survey, accelerator)
    try:
        fitted = _fit_all(opts, accelerator, stages, plan)
    finally:
        plan_file = os.environ.pop(PLAN_ENV, None) if own_plan else None
        if plan_file:        # the ranks Lightning started read it when they started
            Path(plan_file).unlink(missing_ok=True)
    if rank != 0:
        return None
    return {name: _finish(opts, survey, accelerator, name, stages[name], plan["stages"][name],
                          *fitted[name]) for name in stages}


#: the settings of the run that labelled real cutouts that also decide how they are prepared
REAL_RUN_KEYS = ("mask", "sky", "survey", "band", "psf", "zeropoint", "pixel_scale", "gain",
                 "saturation", "zoo", "weights", "strict", "detect_thresh", "dilate")


def real_run_options(opts) -> dict:
    """How ``--real`` cutouts are prepared (the fields of
    :class:`~galmoss_auto.pipelines.config.RunConfig`): as the run that labelled them prepared
    them when ``--labels`` is a run's catalog (its folder's ``run.json``), so that the network
    learns from the inputs the labels were fitted on; else as ``run --survey S --band B`` with
    this command's survey and band."""
    record = Path(str(opts.labels)).parent / "run.json"
    if record.is_file():
        try:
            config = json.loads(record.read_text()).get("config", {})
        except (OSError, ValueError) as exc:
            raise TrainError(f"{record}: unreadable run record ({exc})") from None
        options = {k: config[k] for k in REAL_RUN_KEYS if k in config}
        if "weights" in options:
            options["weights"] = tuple(options["weights"] or ())
        return options
    return {"survey": opts.survey, "band": opts.band}


def _real_data(opts, name: str) -> dict:
    """The data module's real-cutout arguments: the cutouts, their labels, the settings they are
    prepared with and their item store, ``ZOO/data/real-<stage>`` beside the simulations."""
    if not opts.real:
        return {}
    return {"real": opts.real, "labels": opts.labels, "real_options": real_run_options(opts),
            "real_cache": str(Path(opts.out) / "data" / f"real-{name}")}


def _prepare_real(opts, name: str, stage, train_dir, val_dir, s: dict) -> None:
    """Rank 0, with the simulations: prepare the real cutouts into their item store (the data
    module's ``prepare_data``; Lightning's own call then finds them done) and check that some
    have labels, so that a bad ``--real`` or ``--labels`` stops here with its message."""
    from galmoss_auto.pipelines.run import RunError
    try:
        dm = stage.build_datamodule(train_dir, val_dir, batch_size=s["batch_size"], seed=opts.seed,
                                    **_real_data(opts, name))
        dm.setup()
    except (ValueError, OSError, RunError) as exc:
        raise TrainError(f"stage {name}: {exc}") from None


def _start_weights(opts) -> dict:
    """{stage: ResolvedCheckpoint} of ``--init-weights`` for the stages being trained.  A
    choice for a named stage must resolve for it; a bare one must resolve for at least one."""
    from galmoss_auto.models import resolve_checkpoint
    from galmoss_auto.pipelines.config import parse_weights
    try:
        choices = parse_weights(tuple(opts.init_weights or ()))
    except ValueError as exc:
        raise TrainError(str(exc).replace("--weights", "--init-weights")) from None
    out, bare_errors, bare_used = {}, [], False
    for name in opts.stages:
        choice, bare = choices.get(name), choices.get("*")
        if choice is None and bare is None:
            continue
        try:
            # a name is looked up in ZOO (a previous training's) when it exists, then as run does
            zoo = opts.out if (Path(opts.out) / "registry.json").is_file() else None
            out[name] = resolve_checkpoint(name, None, None, zoo=zoo, weights=choice or bare)
            bare_used = bare_used or choice is None
        except Exception as exc:           # ResolveError, a damaged registry, ...
            text = str(exc).replace("--weights", "--init-weights")
            if choice is not None:
                raise TrainError(text) from None
            bare_errors.append(text)
    if "*" in choices and not bare_used:
        raise TrainError("; ".join(bare_errors) or f"--init-weights {choices['*']}: for no stage trained")
    return out


def _start_arch(start) -> str | None:
    """The ``--arch`` a checkpoint was trained with (its registry entry's ``training.arch``,
    else its builder's ``arch`` keyword), or None when its entry does not say."""
    entry = start.entry or {}
    arch = (entry.get("training") or {}).get("arch")
    if arch is None:
        arch = ((entry.get("architecture") or {}).get("kwargs") or {}).get("arch")
    return None if arch is None else str(arch)


def _load_start(stage, name: str, module, start: dict) -> None:
    """Load the checkpoint ``start`` (the plan's record) into ``module``'s inference network
    (the stage's ``inference_network``), sha256-checked; a network of another shape is refused."""
    from galmoss_auto.models import load_checkpoint
    network = getattr(stage, "inference_network", None)
    if network is None:
        raise TrainError(f"stage {name} cannot start from weights (no inference_network)")
    net = network(module)
    try:
        state, _ = load_checkpoint(start["path"], start["sha256"])
        own = net.state_dict()
        state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
        net.load_state_dict(state)
    except Exception as exc:        # CheckpointError, or load_state_dict's missing/unexpected keys
        detail = " ".join(str(exc).split())
        raise TrainError(f"--init-weights {start['path']}: cannot start {name} from it: "
                         f"{detail[:300]}{' ...' if len(detail) > 300 else ''} (train the "
                         f"checkpoint's architecture: {start['architecture']})") from None


def _fit_all(opts, accelerator, stages, plan) -> dict:
    """Train every stage with the one Trainer configuration; {name: (module, trainer, meter)}."""
    import lightning as L
    workers = _workers(opts, accelerator)
    fitted = {}
    for name, stage in stages.items():
        p = plan["stages"][name]
        s = p["settings"]
        L.seed_everything(opts.seed, workers=True, verbose=False)
        module = stage.build_module(**_hparams(stage, s))
        if p["start"] is not None and not p["ckpt"]:
            _load_start(stage, name, module, p["start"])
        if p["ckpt"]:
            # resume the network that was trained, not today's defaults: the checkpoint's own
            # hyperparameters (defaults may have changed since it was written)
            module = type(module).load_from_checkpoint(p["ckpt"], map_location="cpu")
        try:
            dm = stage.build_datamodule(p["train_dir"], p["val_dir"], batch_size=s["batch_size"],
                                        seed=opts.seed, num_workers=workers, **_real_data(opts, name))
        except (ValueError, FileNotFoundError) as exc:
            raise TrainError(f"stage {name}: {exc}") from None
        root = _stage_root(opts, name)
        meter = _throughput_meter(s["batch_size"])
        n = p["data"].get("n_train") or s["n_train"]
        kwargs = trainer_kwargs(opts, accelerator, root, s["epochs"],
                                max(1, n // (s["batch_size"] * opts.devices * opts.num_nodes)),
                                bool(getattr(stage, "DDP_FIND_UNUSED_PARAMETERS", False)))
        kwargs["callbacks"].append(meter)
        try:
            trainer = L.Trainer(**kwargs)
        except Exception as exc:        # Lightning's MisconfigurationException and kin
            raise TrainError(f"stage {name}: cannot configure Lightning: {exc}") from None
        with warnings.catch_warnings():
            # every stream of the data modules (ShardDataset, StoredItems) gives each rank and
            # data-loader worker its own items, so Lightning's caution that an IterableDataset's
            # length "could be inaccurate" with several workers does not apply
            warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")
            trainer.fit(module, datamodule=dm, ckpt_path=p["ckpt"])
        fitted[name] = (module, trainer, meter)
    return fitted


def _finish(opts, survey, accelerator, name, stage, p, module, trainer, meter) -> dict:
    """Rank 0: evaluate on the held-out set, export to the zoo, write the report."""
    from galmoss_auto.pipelines.report import write_report
    s = p["settings"]
    # samples/s of the training epochs proper (all ranks together), validation excluded
    rate = meter.samples(trainer.world_size) / meter.seconds if meter.seconds > 0 else None
    device = "cuda:0" if accelerator == "gpu" else "cpu"
    module.eval()
    t0 = time.perf_counter()
    evaluation = stage.evaluate(module, p["val_dir"], device=device)
    eval_s = time.perf_counter() - t0
    training = {"command": _command() or _canonical_command(opts, name, s, p["start"]),
                "reproduce": _canonical_command(opts, name, s, p["start"]),
                "galmoss_auto_version": __version__, "seed": opts.seed,
                "n_train": p["data"].get("n_train") or s["n_train"], "n_val": p["data"]["n_val"],
                "val_seed": p["data"]["val_seed"], "epochs": s["epochs"],
                "batch_size": s["batch_size"], "lr": s.get("lr"), "arch": s.get("arch"),
                "devices": opts.devices, "num_nodes": opts.num_nodes,
                "accelerator": accelerator, "precision": opts.precision,
                "simulator": _preset_record(_with_blend(opts, s), survey, p["data"]["size"]),
                **({"data": p["data"]["data"]} if "data" in p["data"] else {}),
                **({"real": opts.real, "labels": opts.labels} if opts.real else {}),
                **({"init_weights": {k: p["start"][k] for k in ("name", "sha256")}}
                   if p["start"] is not None else {}),
                "train_seconds": round(meter.wall, 1),
                "samples_per_s": round(rate, 2) if rate else None}
    bands = _serve_bands(opts, survey)
    # the range the run checks cutouts against (WEIGHTS_MISMATCH), from the preset itself so
    # that a survey TOML gets one too
    training["trained_for"] = training_range(survey, bands)
    params = inspect.signature(stage.export).parameters.values()
    versioned = any(q.name == "version" or q.kind is q.VAR_KEYWORD for q in params)
    zoo_file = stage.export(module, Path(opts.out), survey=survey.name, bands=bands,
                            training=training, evaluation=evaluation,
                            **({"version": opts.version} if versioned else {}))
    report = write_report(Path(opts.out) / "report", name, stage=stage, module=module,
                          sim_dir=p["val_dir"], log_dir=_stage_root(opts, name) / "logs",
                          evaluation=evaluation, training=training, zoo_file=zoo_file)
    return {"zoo_file": str(zoo_file), "report": str(report), "evaluation": evaluation,
            "train_s": meter.wall, "eval_s": eval_s, "samples_per_s": rate or 0.0}


if __name__ == "__main__":
    sys.exit(main())
