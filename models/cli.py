"""``galmoss-auto weights``: list, download, verify, install and locate network checkpoints.

    galmoss-auto weights list [--format json] [--zoo DIR] [--stage S] [--survey S] [--band B]
    galmoss-auto weights download NAME [NAME ...] | --survey S --band B [--stage S] [--force]
    galmoss-auto weights verify [NAME ...] [--zoo DIR]        exit 1 when a file fails its hash
    galmoss-auto weights install FILE [FILE ...]              offline, from .safetensors files
    galmoss-auto weights path NAME [--zoo DIR]
    galmoss-auto weights ship ZOO|FILE [--name N]             (developers) into the package defaults

Nothing touches the network except ``download``.  The cache is ``$GALMOSS_AUTO_HOME`` (default
``~/.cache/galmoss-auto``); a mirror folder can be named with ``$GALMOSS_AUTO_WEIGHTS_URL``.
Exit status: 0 success, 1 a failed download, verification or install, 2 bad use.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .checkpoint import CheckpointError, ChecksumError, read_entry, sha256_file
from .download import DownloadError, download
from .registry import (STAGES, RegistryError, add_shipped, cache_registry_path, cache_weights_dir,
                       catalogue, find, home, matches, upsert_entry, validate_entry)

__all__ = ["add_parser", "main"]


class _BadUse(Exception):
    """A request that cannot be understood (exit 2)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``weights`` and its actions on an argparse ``subparsers`` object."""
    p = subparsers.add_parser("weights", help="list, download, verify and install network weights",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    acts = p.add_subparsers(dest="weights_action", required=True, metavar="ACTION")

    a = acts.add_parser("list", help="known checkpoints (table, or --format json)")
    a.add_argument("--format", choices=["table", "json"], default="table")
    _filters(a)
    a.set_defaults(weights_func=_list)

    a = acts.add_parser("download", help="fetch checkpoints into the cache (hash-checked)")
    a.add_argument("names", nargs="*", metavar="NAME")
    _filters(a)
    a.add_argument("--force", action="store_true", help="download again even when installed")
    a.add_argument("--timeout", type=float, default=60.0, help="network timeout per read, s (default 60)")
    a.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    a.set_defaults(weights_func=_download)

    a = acts.add_parser("verify", help="check installed files against their sha256 (exit 1 on a mismatch)")
    a.add_argument("names", nargs="*", metavar="NAME", help="only these (default: every installed file)")
    a.add_argument("--zoo", default=None, help="also a user zoo folder")
    a.set_defaults(weights_func=_verify)

    a = acts.add_parser("install", help="install .safetensors files into the cache without a network")
    a.add_argument("files", nargs="+", metavar="FILE")
    a.add_argument("--force", action="store_true", help="replace an installed copy")
    a.set_defaults(weights_func=_install)

    a = acts.add_parser("path", help="print the path of an installed checkpoint")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--zoo", default=None, help="also a user zoo folder")
    a.set_defaults(weights_func=_path)

    a = acts.add_parser("ship", help="(developers) copy zoo checkpoints into the package's shipped defaults")
    a.add_argument("source", help="zoo folder, its registry.json, or one .safetensors file")
    a.add_argument("--name", default=None, help="only this entry of the zoo")
    a.add_argument("--list-only", dest="copy", action="store_false",
                   help="record the entry without copying its file (a larger variant installed by users)")
    a.add_argument("--url", dest="urls", action="append", default=None,
                   help="a URL that serves the file (repeatable); list none that does not")
    a.set_defaults(weights_func=_ship)

    p.set_defaults(func=_run)
    return p


def _filters(a) -> None:
    a.add_argument("--zoo", default=None, help="also a user zoo folder (as `train` writes)")
    a.add_argument("--stage", choices=STAGES, default=None)
    a.add_argument("--survey", default=None)
    a.add_argument("--band", default=None)


def _run(args) -> int:
    try:
        return int(args.weights_func(args) or 0)
    except _BadUse as exc:
        print(f"galmoss-auto weights: error: {exc}", file=sys.stderr)
        return 2
    except (RegistryError, CheckpointError, DownloadError, OSError) as exc:
        print(f"galmoss-auto weights: error: {exc}", file=sys.stderr)
        return 1


def _selected(args, located):
    out = []
    for loc in located:
        e = loc.entry
        if args.stage and e["stage"] != args.stage:
            continue
        if args.survey and args.band:
            if not matches(e, e["stage"], args.survey, args.band):
                continue
        elif args.survey and e["survey"].lower() not in (args.survey.lower(), "*"):
            continue
        elif args.band and not ({args.band.lower(), "*"} & {b.lower() for b in e["bands"]}):
            continue
        out.append(loc)
    return out


def _catalogue(zoo):
    try:
        return catalogue(zoo)
    except RegistryError as exc:
        raise _BadUse(str(exc)) from exc


def _arch(entry) -> str:
    arch = entry["architecture"]
    text = arch["builder"].split(":")[-1].split(".")[-1]
    kw = arch.get("kwargs") or {}
    extra = [str(kw[k]) for k in ("backbone", "arch", "depth") if k in kw]
    return text + (f"({','.join(extra)})" if extra else "")


def _metrics(entry, n: int = 3) -> str:
    items = list((entry.get("evaluation") or {}).items())[:n]
    return " ".join(f"{k}={v:.3g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in items)


def _size(entry) -> str:
    size = entry.get("size")
    return "?" if size is None else (f"{size / 1e6:.1f}MB" if size >= 1e5 else f"{size / 1e3:.0f}kB")


def _list(args) -> int:
    located = _selected(args, _catalogue(args.zoo))
    if args.format == "json":
        rows = [dict(loc.entry, band=",".join(loc.entry["bands"]), installed=loc.installed,
                     origin=loc.origin, path=str(loc.path)) for loc in located]
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    header = ("name", "stage", "survey", "bands", "arch", "size", "installed", "metrics")
    rows = [(loc.name, loc.entry["stage"], loc.entry["survey"], ",".join(loc.entry["bands"]), _arch(loc.entry),
             _size(loc.entry), loc.origin if loc.installed else "no", _metrics(loc.entry)) for loc in located]
    if not rows:
        print(f"no checkpoints known (shipped registry, cache {home()}"
              f"{', zoo ' + args.zoo if args.zoo else ''})")
        return 0
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


def _download(args) -> int:
    located = _catalogue(args.zoo)
    if args.names:
        if args.survey or args.band or args.stage:
            raise _BadUse("give NAMEs or --survey/--band/--stage, not both")
        try:
            targets = [find(n, args.zoo) for n in args.names]
        except RegistryError as exc:
            raise _BadUse(str(exc)) from exc
    elif args.survey and args.band:
        targets = {}
        for loc in _selected(args, located):
            targets.setdefault(loc.name, loc)
        targets = list(targets.values())
        if not targets:
            raise _BadUse(f"no {args.stage or 'automask/initnet'} checkpoint for survey {args.survey} "
                          f"band {args.band} (see `galmoss-auto weights list`)")
    else:
        raise _BadUse("say what to download: NAME, or --survey S --band B [--stage S]")
    status = 0
    for loc in targets:
        if loc.origin in ("shipped", "zoo") and loc.installed and not args.force:
            print(f"{loc.name}: {loc.origin}, nothing to download ({loc.path})")
            continue
        try:
            path = download(loc.entry, force=args.force, progress=args.progress, timeout=args.timeout)
        except (DownloadError, ChecksumError) as exc:
            print(f"galmoss-auto weights download: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"{loc.name}: {path}")
    return status


def _verify(args) -> int:
    located = [loc for loc in _catalogue(args.zoo) if loc.installed]
    if args.names:
        unknown = sorted(set(args.names) - {loc.name for loc in _catalogue(args.zoo)})
        if unknown:
            raise _BadUse(f"unknown checkpoint(s) {', '.join(unknown)}")
        located = [loc for loc in located if loc.name in args.names]
    bad = 0
    for loc in located:
        want = loc.entry.get("sha256")
        actual = sha256_file(loc.path)
        if want is None or actual != want:
            bad += 1
            print(f"MISMATCH {loc.name} ({loc.origin}) {loc.path}: sha256 {actual}, expected {want}")
        else:
            print(f"ok       {loc.name} ({loc.origin}) {loc.path}")
    print(f"{len(located)} file(s) checked, {bad} mismatch(es)" if located else "no installed checkpoints")
    return 1 if bad else 0


def _install(args) -> int:
    status = 0
    for f in args.files:
        try:
            print(_install_one(Path(f), args.force))
        except (RegistryError, CheckpointError, OSError) as exc:
            print(f"galmoss-auto weights install: {exc}", file=sys.stderr)
            status = 1
    return status


def _install_one(src: Path, force: bool) -> str:
    """Copy one file into the cache: checked against its registry entry, or registered as a user
    entry from its embedded metadata."""
    embedded = read_entry(src)
    actual = sha256_file(src)
    name = embedded.get("name")
    known = [loc for loc in catalogue() if loc.name == name]
    if known:
        entry = known[0].entry
        if entry.get("sha256") != actual:
            raise ChecksumError(src, entry.get("sha256"), actual,
                                what=f"file for registered checkpoint {name!r}")
        register = None
    else:
        entry = dict(embedded, sha256=actual, size=src.stat().st_size)
        entry.setdefault("file", src.name)
        entry.setdefault("urls", [])
        entry = validate_entry(entry, str(src))
        register = entry
    dest = cache_weights_dir() / entry["file"]
    if dest.is_file() and not force and sha256_file(dest) == actual:
        return f"{name}: already installed ({dest})"
    if known and known[0].origin == "shipped" and not force:
        return f"{name}: shipped with the package, identical ({known[0].path})"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    shutil.copyfile(src, tmp)
    if sha256_file(tmp) != actual:
        tmp.unlink()
        raise CheckpointError(f"{src}: changed while it was copied to {dest}")
    tmp.replace(dest)
    if register is not None:
        upsert_entry(cache_registry_path(), register)
        return f"{name}: installed as a user entry ({dest})"
    return f"{name}: installed ({dest})"


def _path(args) -> int:
    try:
        loc = find(args.name, args.zoo)
    except RegistryError as exc:
        raise _BadUse(str(exc)) from exc
    if not loc.installed:
        print(f"galmoss-auto weights path: {args.name} is not installed; run "
              f"`galmoss-auto weights download {args.name}`", file=sys.stderr)
        return 1
    print(loc.path)
    return 0


def _ship(args) -> int:
    added = add_shipped(args.source, name=args.name, copy=args.copy, urls=args.urls)
    for e in added:
        print(f"shipped {e['name']} ({e['file']}, {_size(e)}, sha256 {e['sha256']})")
    return 0


def main(argv=None) -> int:
    """Run ``weights`` on its own (``python -m galmoss_auto.models.cli list``)."""
    parser = argparse.ArgumentParser(prog="galmoss-auto")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["weights", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
