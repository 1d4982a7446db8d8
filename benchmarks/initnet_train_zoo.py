"""Train the initnet zoo checkpoints: one per built-in survey preset (band r, mapped to all bands).

Uses the stage API of galmoss_auto.initnet.lightning exactly as ``galmoss-auto train`` does:
simulate (done beforehand: ``<sims>/<survey>_{train,val,test}``, 64 px, single Sérsic +
contaminants, seeds 1100+k / 1200+k / 1300+k), train, evaluate on the held-out split, export.

    python benchmarks/initnet_train_zoo.py --sims /work/sims --zoo /work/zoo_initnet \
        --surveys sdss legacy hsc lsst --train-name trainbig --sample-budget 34000 --max-minutes 7.5

Runs single-threaded (the CI/VM machine has 2 shared cores); resumes from <work>/<survey>/last.ckpt.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sims", default="/work/sims")
    ap.add_argument("--zoo", default="/work/zoo_initnet")
    ap.add_argument("--work", default="/work/initnet_runs")
    ap.add_argument("--surveys", nargs="+", default=["sdss", "legacy", "hsc", "lsst"])
    ap.add_argument("--epochs", type=int, default=0, help="0: as many as --sample-budget allows")
    ap.add_argument("--sample-budget", type=int, default=34000, help="training samples seen (sets epochs)")
    ap.add_argument("--steps", type=int, default=0, help="optimiser steps (the LR schedule spans exactly "
                    "these; epochs follow)")
    ap.add_argument("--train-name", default="train", help="training folder <sims>/<survey>_<name>")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-minutes", type=float, default=7.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tag", default="", help="suffix for ablation runs (not exported to the zoo)")
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--param-weight", type=float, default=1.0)
    ap.add_argument("--arch", default="compact")
    ap.add_argument("--no-export", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from galmoss_auto.initnet.lightning import build_datamodule, build_module, evaluate, export, report_figures

    L.seed_everything(a.seed, workers=True)
    for survey in a.surveys:
        name = survey + (f"-{a.tag}" if a.tag else "")
        work = Path(a.work) / name
        work.mkdir(parents=True, exist_ok=True)
        sims = Path(a.sims)
        train_dir = sims / f"{survey}_{a.train_name}"
        n_train = json.loads((train_dir / "run.json").read_text())["n"]
        epochs = (math.ceil(a.steps * a.batch_size / n_train) if a.steps
                  else (a.epochs or max(1, round(a.sample_budget / n_train))))
        dm = build_datamodule(train_dir, sims / f"{survey}_val", batch_size=a.batch_size, seed=a.seed)
        module = build_module(epochs=epochs, lam=a.lam, param_weight=a.param_weight, arch=a.arch)
        ckpt = ModelCheckpoint(dirpath=work, save_last=True, save_top_k=0)
        trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", deterministic=True, logger=CSVLogger(work, name="logs"),
                            callbacks=[ckpt], max_time={"minutes": a.max_minutes},
                            max_steps=a.steps or -1, enable_progress_bar=False,
                            log_every_n_steps=10)
        last = work / "last.ckpt"
        t0 = time.time()
        trainer.fit(module, dm, ckpt_path=str(last) if last.is_file() else None)
        train_s = time.time() - t0
        ev = evaluate(module, sims / f"{survey}_test")
        ev["train_seconds"] = round(train_s, 1)
        ev["epochs_done"] = int(trainer.current_epoch)
        (work / "evaluation.json").write_text(json.dumps(ev, indent=1))
        report_figures(module, sims / f"{survey}_test", work)
        print(survey, a.tag, f"train {train_s:.0f}s epochs {trainer.current_epoch}",
              {k: round(v, 4) for k, v in ev.items() if "snr" not in k and ("sigma_mag" in k or "sigma_log_re" in k or "sigma_n" in k)},
              flush=True)
        if not a.no_export:
            run = json.loads((train_dir / "run.json").read_text())
            from galmoss_auto.data_scripts.surveys import load_survey
            bands = list(load_survey(survey).bands)
            training = {"command": "python benchmarks/initnet_train_zoo.py " + " ".join(sys.argv[1:] if argv is None else argv),
                        "seed": a.seed, "n_train": run["n"], "epochs": int(trainer.current_epoch),
                        "simulator": {"preset": survey, "band": run["band"], "size": run["size"], "seed": run["seed"],
                                      "population": run["population"], "contaminants": run["contaminants"]},
                        "trained_band": run["band"], "train_seconds": round(train_s, 1), "machine": "2-core CPU VM, 1 thread"}
            keys = [k for k in ev if "snr" not in k]
            path = export(module, a.zoo, survey=survey, bands=bands, training=training,
                          evaluation={k: ev[k] for k in keys})
            print("exported", path, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
