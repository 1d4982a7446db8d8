"""The ``galmoss-auto`` command: ``run``, ``demo``, ``simulate``, ``fit``.

Each subcommand module has ``add_parser(subparsers)``, which registers it and sets
``func(args) -> exit code``.  ``simulate`` and ``fit`` live in data_scripts/ and fitting/; if
their module cannot be imported, the subcommand still exists and says why it cannot run.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "build_parser", "add_run_arguments"]


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``run`` and ``demo``."""
    g = p.add_argument_group("stages")
    g.add_argument("--mask", default="auto",
                   help="masker: auto (default: maskrcnn when a checkpoint for --survey/--band "
                        "resolves, else sep), sep, maskrcnn, or none (user mask and bad pixels only)")
    g.add_argument("--init", default="auto",
                   help="initializer: auto (default: initnet when a checkpoint resolves, else sep), "
                        "sep (moments), initnet, or the path of a catalog with id and "
                        "sersic_<param> columns")
    g.add_argument("--sky", default="flat", choices=["flat", "tilted", "subtract", "none"],
                   help="the background: flat (default: a constant sky fitted with the galaxy, "
                        "started from the measured level; sky_sky, sky_sky_err columns), tilted "
                        "(plus x/y gradients), subtract (measured level removed before the fit), "
                        "none (the images are sky-subtracted)")
    g.add_argument("--zoo", default=None, metavar="DIR",
                   help="model-zoo folder searched first for learned-stage checkpoints")
    g.add_argument("--weights", action="append", default=[], metavar="[STAGE=]NAME|FILE",
                   help="checkpoint for a learned stage: a registry name or a .safetensors file; "
                        "STAGE= (automask or initnet) picks the stage; repeatable")
    g.add_argument("--strict", action="store_true",
                   help="refuse a checkpoint trained for another pixel scale or PSF range (sep is "
                        "used, flag WEIGHTS_MISMATCH); default: use it with a warning and the flag")
    g.add_argument("--method", default="lm", choices=["lm", "adam"], help="fitting method (default lm)")
    g.add_argument("--errors", default="covariance", choices=["covariance", "bootstrap", "none"],
                   help="parameter errors (default covariance)")
    g.add_argument("--no-residual-search", dest="residual_search", action="store_false",
                   help="do not look for missed sources in the residuals (default: each fit's "
                        "residual is searched for one lopsided source, which is fitted as an extra "
                        "Sersic neighbour where it lowers chi2 by > 25 and stands out from the "
                        "galaxy's own structure; it costs 1.5-1.6x the fitting time on crowded "
                        "cutouts)")
    g.add_argument("--detect-thresh", dest="detect_thresh", type=float, default=1.5,
                   help="sep detection threshold in sigma (default 1.5)")
    g.add_argument("--dilate", type=int, default=2,
                   help="grow contaminant segments by this many pixels (default 2; bigger objects more)")
    s = p.add_argument_group("execution")
    s.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    s.add_argument("--batch-size", dest="batch_size", type=int, default=None,
                   help="galaxies per fitter batch (default: the fitter's)")
    s.add_argument("--chunk-size", dest="chunk_size", type=int, default=None,
                   help="galaxies per shard written to disk (default 128 on the CPU, 2048 on a GPU)")
    s.add_argument("--workers", type=int, default=-1,
                   help="DataLoader worker processes for reading, sep masking and initial guesses "
                        "(default: CPU cores - 1, at most 16; 0 = in the main process)")
    s.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out (refused if the input or settings changed)")
    s.add_argument("--overwrite", action="store_true", help="discard earlier results in --out")
    s.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    o = p.add_argument_group("outputs")
    o.add_argument("--panels", type=int, default=0, metavar="N",
                   help="PNG panels (data, model, residual) for the first N galaxies (default 0)")
    o.add_argument("--blocks", action="store_true", help="a FITS image block per galaxy")
    o.add_argument("--no-masks", dest="save_masks", action="store_false", help="do not write masks")


def _add_run_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="fit every cutout of a directory, glob or manifest (masks and initial guesses automatic)",
        description="Raw cutouts in, a catalog of Sersic fits out: each cutout's own SIGMA/PSF/MASK "
                    "extensions and header zero-point/pixel scale used first, sky fitted, sigma "
                    "estimated where absent, learned or sep masks and initial guesses, batched "
                    "fit, sharded resumable output in a locked --out.  Catalog columns "
                    "psf_source, sigma_source, zeropoint_source say where each input came from; a "
                    "cutout without any zero-point is fitted with 0 and flagged NO_ZEROPOINT, one "
                    "without any PSF (file, --psf or --survey) unconvolved and flagged NO_PSF.")
    p.add_argument("input", help="manifest (.csv/.ecsv/.fits with id,image[,sigma|weight|variance,psf,"
                                 "mask,zeropoint,pixel_scale,gain,saturation,psf_oversampling,"
                                 "psf_x,psf_y]; psf_x, psf_y: where a PSFEx .psf model is "
                                 "evaluated), a directory of FITS "
                                 "cutouts, or a quoted glob")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--model", default=None, metavar="FILE",
                   help="model to fit instead of one Sersic: model.yaml, model.toml or a GALFIT "
                        "feedme (its components, fixed values, ties and bounds; starts come from "
                        "--init's single-Sersic start, spread over bulge and disk by a rule)")
    d = p.add_argument_group("defaults for rows whose manifest cell, extensions and header lack them")
    d.add_argument("--survey", default=None, help="survey preset (sdss, legacy, hsc, lsst): pixel "
                   "scale, zero-point, gain and PSF; needs --band")
    d.add_argument("--band", default=None, help="band of the survey preset")
    d.add_argument("--psf", default=None, help="PSF FITS file for every galaxy without its own")
    d.add_argument("--zeropoint", type=float, default=None, help="magnitude zero-point")
    d.add_argument("--pixel-scale", dest="pixel_scale", type=float, default=None, help="arcsec/px")
    d.add_argument("--gain", type=float, default=None,
                   help="e-/image unit, adds Poisson noise to estimated sigma maps")
    d.add_argument("--saturation", type=float, default=None,
                   help="saturation level (image units, as the SATURATE header keyword): pixels "
                        "at or above it are masked and counted (n_saturated)")
    add_run_arguments(p)
    from galmoss_auto.pipelines.distributed import add_distributed_arguments
    add_distributed_arguments(p.add_argument_group("scale-out (torchrun / srun, or local processes)"))
    p.set_defaults(func=_cmd_run)


def _cmd_run(args) -> int:
    from galmoss_auto.pipelines.config import RunConfig
    from galmoss_auto.pipelines.run import RunError, run
    from galmoss_auto.pipelines import distributed
    try:
        cfg = RunConfig.from_args(args)
        if distributed.wants_distributed(args):
            record = distributed.run_distributed(cfg, args.devices, args.num_nodes, args.accelerator,
                                                 workers_auto=args.workers < 0)
        else:
            record = run(cfg)
    except (RunError, ValueError) as exc:
        print(f"galmoss-auto run: error: {exc}", file=sys.stderr)
        return 2
    except distributed.RankFailure as exc:
        print(f"galmoss-auto run: error: {exc}", file=sys.stderr)
        return 1
    if record is not None:      # None on ranks other than 0
        summarise(record)
    return 0


def summarise(record: dict, stream=None) -> None:
    """Print where the results are and what happened."""
    stream = stream or sys.stdout
    c = record["counts"]
    print(f"galmoss-auto: {c['galaxies']} galaxies, {c['fitted']} fitted, "
          f"{c['flags'].get('any', 0)} with flags {dict((k, v) for k, v in c['flags'].items() if k != 'any')}",
          file=stream)
    rate = record["rates"]["galaxies_per_s_end_to_end"]
    if rate:
        print(f"galmoss-auto: {rate:.2f} galaxies/s end to end ({record['timings_s']['total']:.1f} s)",
              file=stream)
    print(f"galmoss-auto: catalog: {record['catalog']} (and {record['catalog_ecsv']})", file=stream)


def _external(subparsers, name: str, module: str, help: str) -> None:
    """Register ``name`` from ``module.add_parser``; if the module is missing, register a
    subcommand that explains the problem and exits 2."""
    try:
        mod = importlib.import_module(module)
        add = mod.add_parser
    except (ImportError, AttributeError) as exc:
        reason = f"{module} is not available ({type(exc).__name__}: {exc})"
        p = subparsers.add_parser(name, help=f"{help} [unavailable: {reason}]", add_help=True)
        p.add_argument("rest", nargs=argparse.REMAINDER)

        def unavailable(_args, reason=reason):
            print(f"galmoss-auto {name}: error: {reason}", file=sys.stderr)
            return 2
        p.set_defaults(func=unavailable)
        return
    add(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="galmoss-auto",
        description="Automatic batched galaxy profile fitting: masks, initial guesses and fits from raw cutouts.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(sub)
    from galmoss_auto.pipelines.demo import add_parser as add_demo
    add_demo(sub)
    _external(sub, "simulate", "galmoss_auto.data_scripts.simulate", "simulate survey cutouts with truth")
    _external(sub, "fit", "galmoss_auto.fitting.cli_fit", "fit cutouts with given masks and initial values")
    _external(sub, "weights", "galmoss_auto.models.cli", "list, download, verify and install network weights")
    _external(sub, "train", "galmoss_auto.pipelines.train", "retrain masker and initnet for a survey")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ngalmoss-auto: interrupted; finished shards are kept, continue with --resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
