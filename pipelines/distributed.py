"""Scale-out for ``galmoss-auto run`` and ``train``: one process per device, on one or many nodes.

How the processes come to exist:

* **torchrun** (``torchrun --nproc-per-node 4 -m galmoss_auto.pipelines.cli run ... --devices 4``)
  or **SLURM** (``srun --ntasks-per-node 4 galmoss-auto run ... --devices 4 --num-nodes 2``), or
  LSF ``jsrun``: the launcher starts every rank and sets ``RANK`` / ``WORLD_SIZE`` /
  ``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT`` (or the ``SLURM_*`` variables); they are
  read through Lightning's cluster environments, so ``run`` and ``train`` see them alike.
* **Neither** (plain ``galmoss-auto run ... --devices 2``): :func:`run_distributed` starts the
  ranks itself, as ``python -m galmoss_auto.pipelines.distributed CONFIG`` subprocesses with
  the same variables torchrun sets, watches them, and reports any that fails.  (``train``
  leaves this case to Lightning's own DDP launcher.)

What ``run`` does across ranks: rank r of W handles the r-th contiguous block of the input
records (``RunConfig.rank`` / ``world_size``, implemented in pipelines/run.py), on
``cuda:LOCAL_RANK`` on a GPU node, and writes shards named after itself, so ranks never write
the same file and ``--resume`` redoes nothing any rank finished.  Then every rank reports
success or its error to the others (a gloo all-gather: only a few bytes cross ranks, no tensors,
so gloo serves CPU and GPU nodes alike and no NCCL watchdog can abort a rank that waits while
a slower one still fits), and rank 0 merges the shards once (``merge_run``) into one catalog:
every id exactly once, in input order, the same as a one-process run.  A rank that failed makes
every rank exit non-zero with a message naming it; the finished ranks' shards are kept, so the
run continues with ``--resume``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path

__all__ = ["Launch", "add_distributed_arguments", "external_launch", "resolve_accelerator",
           "wants_distributed", "run_distributed", "rank_main", "RankFailure", "free_port",
           "TIMEOUT_ENV"]

#: Seconds a rank waits for the others at the final status exchange (default 7 days: ranks
#: finish their blocks at different times, and the slowest sets the pace).
TIMEOUT_ENV = "GALMOSS_AUTO_DIST_TIMEOUT_S"
_RANK_DIR = ".ranks"
#: Test hook: the rank with this number raises before its block (the failure path).
FAIL_RANK_ENV = "GALMOSS_AUTO_FAIL_RANK"


class RankFailure(RuntimeError):
    """One or more ranks failed; the message names them and what they said."""


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a distributed job (global ``rank`` of ``world_size``)."""

    rank: int
    world_size: int
    local_rank: int
    node_rank: int
    main_address: str
    main_port: int
    launcher: str          # "torchrun", "slurm", "lsf", "local"


def add_distributed_arguments(group) -> None:
    """``--devices``, ``--num-nodes`` and ``--accelerator`` on an argparse (group) object."""
    group.add_argument("--devices", type=int, default=1,
                       help="processes (one per GPU, or CPU workers) per node (default 1)")
    group.add_argument("--num-nodes", dest="num_nodes", type=int, default=1,
                       help="nodes of a multi-node job started by torchrun or srun (default 1)")
    group.add_argument("--accelerator", default="auto", choices=["cpu", "gpu", "auto"],
                       help="cpu, gpu or auto (gpu when CUDA is present; default)")


def resolve_accelerator(name: str) -> str:
    """``"cpu"`` or ``"gpu"`` for ``cpu|gpu|auto``; ValueError for ``gpu`` without CUDA."""
    import torch
    if name not in ("cpu", "gpu", "auto"):
        raise ValueError(f"--accelerator must be cpu, gpu or auto, got {name!r}")
    if name == "gpu" and not torch.cuda.is_available():
        raise ValueError("--accelerator gpu: no CUDA device is available on this machine")
    if name == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return name


#: One of these is set under each launcher that :func:`external_launch` recognises (Lightning's
#: detection: torchrun's TORCHELASTIC_RUN_ID, srun's SLURM_NTASKS, LSF's LSB_JOBID with three
#: more); without any of them no launcher can be detected.
LAUNCH_VARIABLES = ("TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "LSB_JOBID")


def external_launch() -> Launch | None:
    """The rank this process was given by torchrun, SLURM or LSF (world size > 1), else None.

    Uses Lightning's cluster environments, which ``train`` also relies on, so both commands
    agree on who is rank 0."""
    if not any(v in os.environ for v in LAUNCH_VARIABLES):
        return None     # no launcher: spare every plain `run` the seconds Lightning takes to import
    from lightning.fabric.plugins.environments import (LSFEnvironment, SLURMEnvironment,
                                                       TorchElasticEnvironment)
    for cls, name in ((TorchElasticEnvironment, "torchrun"), (SLURMEnvironment, "slurm"),
                      (LSFEnvironment, "lsf")):
        try:
            if not cls.detect():
                continue
            env = cls()
            world = env.world_size()
            if world <= 1:
                return None
            return Launch(rank=env.global_rank(), world_size=world, local_rank=env.local_rank(),
                          node_rank=env.node_rank(), main_address=env.main_address,
                          main_port=int(env.main_port), launcher=name)
        except (KeyError, ValueError):      # half-set variables: not a usable launch
            continue
    return None


def wants_distributed(args) -> bool:
    """Whether ``run`` should go through :func:`run_distributed`."""
    return (getattr(args, "devices", 1) or 1) * (getattr(args, "num_nodes", 1) or 1) > 1 \
        or external_launch() is not None


def free_port() -> int:
    """A TCP port free on this host right now (for a local rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_sizes(devices: int, num_nodes: int) -> None:
    if devices < 1:
        raise ValueError(f"--devices must be >= 1, got {devices}")
    if num_nodes < 1:
        raise ValueError(f"--num-nodes must be >= 1, got {num_nodes}")


def _rank_settings(cfg, launch: Launch, accelerator: str, local_world: int, workers_auto: bool):
    """The RunConfig of one rank: its block, its device, its share of the CPU cores."""
    device = cfg.device
    if accelerator == "gpu":
        if device not in (None, "cuda") and not str(device).startswith("cuda"):
            raise ValueError(f"--device {device} contradicts --accelerator gpu")
        device = f"cuda:{launch.local_rank}"
    else:
        if device is not None and str(device).startswith("cuda"):
            raise ValueError(f"--device {device} contradicts --accelerator cpu")
        device = "cpu"
    workers = cfg.workers
    if workers_auto:
        # the node's cores shared among its ranks: one fits, the others read and run sep
        workers = max(0, min(16, (os.cpu_count() or 1) // max(1, local_world) - 1))
    return replace(cfg, device=device, workers=workers, rank=launch.rank,
                   world_size=launch.world_size)


def _preflight(cfg) -> None:
    """Rank 0, before any rank starts: ``--overwrite`` clears the earlier results, and an
    output folder holding results without ``--resume`` is refused (as a one-process run does).
    Raises RunError."""
    from galmoss_auto.pipelines import run as runmod
    from galmoss_auto.pipelines.shards import ShardStore
    out = Path(cfg.out)
    if cfg.overwrite:
        for name in (*runmod._OUTPUTS, *(p.name for p in out.glob("run-r*.json"))):
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    elif ShardStore(out).exists() and not cfg.resume:
        raise runmod.RunError(f"{out} already holds the results of a run; use --resume to "
                              "continue it or --overwrite to start over")


def _merged_record(cfg, launch: Launch, catalog, wall: float) -> dict:
    """``run.json`` of the whole distributed run: the ranks' records (``run-r<k>.json``)
    summed, counts and flags from the merged catalog."""
    from galmoss_auto.pipelines.record import catalog_counts, write_record
    out = Path(cfg.out)
    ranks = [json.loads((out / f"run-r{r}.json").read_text()) for r in range(launch.world_size)]
    timings = {}
    for rec in ranks:
        for k, v in rec.get("timings_s", {}).items():
            if k != "total" and isinstance(v, (int, float)):
                timings[k] = timings.get(k, 0.0) + v
    timings["total"] = wall
    n_new = sum(rec["counts"]["processed_this_session"] for rec in ranks)
    counts = catalog_counts(catalog, n_new, len(catalog) - n_new)
    rates = {"galaxies_per_s_end_to_end": n_new / wall if wall > 0 else None,
             "galaxies_per_s_per_rank": [rec["rates"].get("galaxies_per_s_end_to_end")
                                         for rec in ranks]}
    first = ranks[0]
    extra = {"rates": rates, "world_size": launch.world_size, "launcher": launch.launcher,
             "ranks": [{"rank": r, "record": f"run-r{r}.json", "device": rec.get("device"),
                        "galaxies": rec["counts"]["galaxies"],
                        "processed_this_session": rec["counts"]["processed_this_session"],
                        "seconds": rec["timings_s"].get("total")} for r, rec in enumerate(ranks)],
             "workers": first.get("workers"), "checkpoints": first.get("checkpoints"),
             "stage_notes": first.get("stage_notes"), "inputs_hash": first.get("inputs_hash"),
             "model": first.get("model"), "catalog": str(out / "catalog.fits"),
             "catalog_ecsv": str(out / "catalog.ecsv")}
    if (out / "neighbours.fits").exists():
        extra["neighbours"] = str(out / "neighbours.fits")
    config = {**first.get("config", {}), "rank": None}
    return write_record(out / "run.json", config=config, device=first.get("device", {}).get("device", "cpu"),
                        timings=timings, counts=counts, extra=extra)


def rank_main(cfg, launch: Launch, accelerator: str, local_world: int, workers_auto: bool,
              stream=None) -> dict | None:
    """Run one rank's block; rank 0 merges once every rank has succeeded.

    Returns the merged run record on rank 0, None on the other ranks; raises
    :class:`RankFailure` on every rank when any rank failed (or rank 0's pre-flight check of
    the output folder refused it)."""
    import torch
    import torch.distributed as dist

    from galmoss_auto.pipelines import run as runmod
    from galmoss_auto.pipelines.inputs import read_inputs

    stream = stream if stream is not None else sys.stderr
    t0 = time.perf_counter()
    if accelerator == "cpu":
        # ranks on one node share its cores; oversubscribed BLAS threads slow every rank down
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
    else:
        torch.cuda.set_device(launch.local_rank)
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, 7 * 86400)))
    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=f"tcp://{launch.main_address}:{launch.main_port}",
                                rank=launch.rank, world_size=launch.world_size, timeout=timeout)
    try:
        # rank 0 prepares the output folder before any rank looks at it, so that no rank
        # deletes (--overwrite) or rejects what another has just written
        box = [None]
        if launch.rank == 0:
            try:
                _preflight(cfg)
                box = [""]
            except (runmod.RunError, OSError) as exc:
                box = [str(exc)]
        dist.broadcast_object_list(box, src=0)
        if box[0]:
            raise RankFailure(f"rank 0: {box[0]}")
        status = {"rank": launch.rank, "ok": True, "error": "", "host": socket.gethostname()}
        try:
            if os.environ.get(FAIL_RANK_ENV, "") == str(launch.rank):
                raise RuntimeError(f"{FAIL_RANK_ENV}={launch.rank}: failing on purpose (test hook)")
            rcfg = _rank_settings(cfg, launch, accelerator, local_world, workers_auto)
            runmod.run(replace(rcfg, overwrite=False), stream=stream)
        except Exception as exc:     # reported to every rank below, then raised as RankFailure
            status.update(ok=False, error=f"{type(exc).__name__}: {exc}")
            stream.write(f"galmoss-auto run: rank {launch.rank}/{launch.world_size} failed: "
                         f"{status['error']}\n")
        statuses = [None] * launch.world_size
        dist.all_gather_object(statuses, status)
        _status_path(cfg.out, launch.rank).parent.mkdir(parents=True, exist_ok=True)
        _status_path(cfg.out, launch.rank).write_text(json.dumps(status) + "\n")
        bad = [s for s in statuses if not s["ok"]]
        if bad:
            raise RankFailure("; ".join(f"rank {s['rank']} (on {s['host']}) failed: {s['error']}"
                                        for s in bad)
                              + f". Shards of the ranks that finished are kept in {cfg.out}; "
                                "rerun with --resume to continue")
        result = None
        if launch.rank == 0:
            order = [r["id"] for r in read_inputs(cfg.input)]
            catalog = runmod.merge_run(Path(cfg.out), order)
            result = _merged_record(cfg, launch, catalog, time.perf_counter() - t0)
        dist.barrier()          # nobody leaves before the catalog is written
        return result
    finally:
        dist.destroy_process_group()


def _status_path(out, rank: int) -> Path:
    """Written by each rank once the ranks have exchanged their status (so a launcher can tell
    a rank that died before the exchange, whose peers would wait for it, from one that failed
    and told them)."""
    return Path(out) / _RANK_DIR / f"status-{rank:05d}.json"


# --------------------------------------------------------------------------- local launcher

def _spawn_local(cfg, devices: int, accelerator: str, workers_auto: bool, stream) -> int:
    """Start ``devices`` ranks on this host as torchrun would, wait, report failures.

    Returns 0 when every rank succeeded; raises :class:`RankFailure` naming the failed ranks
    (a rank that dies before the status exchange, killed or crashed, would leave its peers
    waiting there, so they are stopped here)."""
    out = Path(cfg.out)
    (out / _RANK_DIR).mkdir(parents=True, exist_ok=True)
    for old in (out / _RANK_DIR).glob("status-*.json"):
        old.unlink()
    config_path = out / _RANK_DIR / "config.json"
    config_path.write_text(json.dumps({"config": asdict(cfg), "accelerator": accelerator,
                                       "workers_auto": workers_auto}, indent=2) + "\n")
    port = free_port()
    procs = []
    for r in range(devices):
        env = dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), GROUP_RANK="0", NODE_RANK="0",
                   WORLD_SIZE=str(devices), LOCAL_WORLD_SIZE=str(devices),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   TORCHELASTIC_RUN_ID=f"galmoss-auto-{os.getpid()}")
        cmd = [sys.executable, "-m", "galmoss_auto.pipelines.distributed", str(config_path)]
        if r == 0:      # rank 0 speaks to the terminal (progress bar); the others to their logs
            procs.append((subprocess.Popen(cmd, env=env), None))
        else:
            log = open(out / _RANK_DIR / f"rank-{r:05d}.log", "w")
            procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    codes: dict[int, int] = {}
    try:
        while len(codes) < devices:
            for r, (p, _) in enumerate(procs):
                if r not in codes and p.poll() is not None:
                    codes[r] = p.returncode
            # a rank that ended badly before the status exchange leaves its peers waiting
            # for it there: stop them
            lost = [r for r, c in codes.items() if c != 0 and not _status_path(out, r).is_file()]
            if lost and len(codes) < devices:
                for r, (p, _) in enumerate(procs):
                    if r not in codes:
                        p.send_signal(signal.SIGTERM)
                for r, (p, _) in enumerate(procs):
                    if r not in codes:
                        codes[r] = p.wait()
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        for p, _ in procs:
            p.send_signal(signal.SIGINT)
        for p, _ in procs:
            p.wait()
        raise
    finally:
        for _, log in procs:
            if log is not None:
                log.close()
    failed = {r: c for r, c in sorted(codes.items()) if c != 0}
    for r in failed:
        path = out / _RANK_DIR / f"rank-{r:05d}.log"
        lines = path.read_text(errors="replace").splitlines()[-15:] if path.is_file() else []
        stream.write("".join(f"[rank {r}] {line}\n" for line in lines))
    if failed:
        def why(r, c):
            if c < 0:
                return f"rank {r} was killed by signal {signal.Signals(-c).name}"
            return f"rank {r} exited with code {c}"
        raise RankFailure("; ".join(why(r, c) for r, c in failed.items())
                          + f" (logs of ranks > 0: {out / _RANK_DIR}/rank-*.log). Shards of the ranks that "
                            "finished are kept; rerun with --resume to continue")
    return 0


def run_distributed(cfg, devices: int = 1, num_nodes: int = 1, accelerator: str = "auto",
                    workers_auto: bool = True, stream=None) -> dict | None:
    """``galmoss-auto run`` over several processes (see the module docstring).

    cfg : a :class:`~galmoss_auto.pipelines.config.RunConfig` (rank / world_size are set here).
    devices : processes per node (>= 1); num_nodes : nodes (>= 1; > 1 needs torchrun or srun).
    accelerator : ``cpu``, ``gpu`` or ``auto``.  workers_auto : share the node's cores among the
    ranks' DataLoader workers (set False when the user chose ``--workers``).
    Returns the merged run record on rank 0 (and in the launching process), None elsewhere.
    """
    stream = stream if stream is not None else sys.stderr
    _check_sizes(devices, num_nodes)
    accelerator = resolve_accelerator(accelerator)
    launch = external_launch()
    if launch is not None:
        expected = devices * num_nodes
        if launch.world_size != expected:
            raise ValueError(f"{launch.launcher} started {launch.world_size} processes but "
                             f"--devices {devices} --num-nodes {num_nodes} make {expected}")
        return rank_main(cfg, launch, accelerator, devices, workers_auto, stream)
    if num_nodes > 1:
        raise ValueError(f"--num-nodes {num_nodes}: start the processes on every node with "
                         "torchrun or srun (see the README); this command starts ranks on this "
                         "host only")
    if accelerator == "gpu":
        import torch
        n = torch.cuda.device_count()
        if devices > n:
            raise ValueError(f"--devices {devices} but this host has {n} CUDA device(s)")
    _preflight(cfg)         # a refused folder is a usage error (RunError), before any rank starts
    _spawn_local(cfg, devices, accelerator, workers_auto, stream)
    record_path = Path(cfg.out) / "run.json"
    return json.loads(record_path.read_text())


def _worker(config_path: str) -> int:
    """Entry of a rank started by :func:`_spawn_local` (torchrun-style variables set)."""
    from galmoss_auto.pipelines.config import RunConfig
    spec = json.loads(Path(config_path).read_text())
    cfg = RunConfig(**spec["config"])
    launch = external_launch()
    if launch is None:
        print(f"{config_path}: started without RANK/WORLD_SIZE; this entry is for ranks "
              "started by galmoss-auto run --devices N", file=sys.stderr)
        return 2
    try:
        rank_main(cfg, launch, spec["accelerator"], launch.world_size, spec["workers_auto"])
    except RankFailure as exc:
        print(f"galmoss-auto run: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
