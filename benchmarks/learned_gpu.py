"""Throughput of the learned stages (masker, initializer) and of training their larger variants.

One prepared script for a lent GPU.  The device machine has torch, torchvision and lightning,
not GalSim, sep or astropy, so the cutouts are simulated here and carried with wheels:

    # here: the cutouts (GalSim; two small simulation folders, ~15 MB) and the wheels (~14 MB)
    python -m benchmarks.learned_gpu --make benchmarks/work/learned --survey sdss
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl astropy==8.0.2 pyerfa==2.0.1.5 astropy-iers-data==0.2026.11.16.0.37.44 sep==1.4.1
    # there (device run, carry: .whl benchmarks/work/learned): the package installed from the
    # tree, the script run by its path (so that the tree's own galmoss_auto/ folder, which
    # holds no subpackage, does not come first on sys.path)
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
        --target /tmp/site .whl/*.whl . \
        && PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 benchmarks/learned_gpu.py \
        --data benchmarks/work/learned --device cuda --out $OUT --tag DATE-gpu-learned

It measures, on ``--device`` (``cuda`` or ``cpu``; the same code):

1. **the masker** (``--mask maskrcnn``, the survey's shipped checkpoint): cutouts/s of
   ``MaskRCNNMasker.mask_batch`` (input normalisation + network + per-cutout post-processing,
   what ``run`` pays), and of the network's forward pass alone, per chunk size; then the
   forward pass alone of the larger builders (ResNet18-FPN, ResNet50-FPN, random weights):
   issue 10 asks >= 5,000 cutouts/s on one H100-class GPU.
2. **the initializer** (``--init initnet``, the survey's shipped checkpoint): cutouts/s of
   ``InitNetInitializer.predict`` (input preparation + network + decoding) per batch size, and of
   the forward pass alone of every architecture (compact, compact-wide, resnet18, resnet50),
   in float32 and (on CUDA) under bfloat16 autocast: issue 11 asks >= 10,000 cutouts/s.
3. **training** the larger variants (``--train-steps`` > 0): samples/s of Lightning steps of the
   ResNet50-FPN Mask R-CNN and the ResNet50 initializer (``--train-mask-arch``,
   ``--train-init-arch``) on the carried simulations (bf16-mixed on CUDA, 32-true on the CPU),
   the first ``--warmup`` steps left out of the timing: what a GPU training of the larger
   variants costs per sample, to size one.

The carried cutouts are repeated to the requested counts: throughput does not depend on the
noise drawn, and the post-processing sees the detections of simulated scenes.  The builders
timed with random weights score every RoI near their 0.05 threshold and so return up to 50
detections per cutout, each mask pasted: slower than a trained network of the same size (the
shipped slim checkpoint's own forward pass is timed beside them).  Writes
``<out>/<tag>.json`` and ``.md`` with the device's name.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

# run by its path on the device: the repository root goes last on sys.path, so that the installed
# galmoss_auto comes before the tree's own galmoss_auto/ folder (which holds no subpackage)
sys.path.append(str(Path(__file__).resolve().parents[1]))
from benchmarks.machine import cpu_model, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
#: simulation folders written by --make
MASK_FOLDER, INIT_FOLDER = "automask", "initnet"
MASK_SIZE, INIT_SIZE = 128, 64
#: shipped checkpoints, per survey (models/weights/)
MASKERS = {"sdss": "automask-sdss-u-g-r-i-z-slim-v4", "legacy": "automask-legacy-g-r-z-slim-v4",
           "hsc": "automask-hsc-g-r-i-z-y-slim-v4", "lsst": "automask-lsst-u-g-r-i-z-y-slim-v4"}
INITNETS = {"sdss": "initnet-sdss-compact-wide-v3", "legacy": "initnet-legacy-compact-wide-v3",
            "hsc": "initnet-hsc-compact-v2", "lsst": "initnet-lsst-compact-v2"}
INIT_ARCHS = ("compact", "compact-wide", "resnet18", "resnet50")
MASK_ARCHS = ("slim", "resnet18", "resnet50")


def make(folder: Path, survey: str, band: str, n_mask: int, n_init: int, seed: int) -> None:
    """Simulate the carried cutouts (here, where GalSim is): contaminated 128 px cutouts for the
    masker and 64 px ones for the initializer, each one shard."""
    from galmoss_auto.data_scripts.simulate import simulate

    for sub, n, size in ((MASK_FOLDER, n_mask, MASK_SIZE), (INIT_FOLDER, n_init, INIT_SIZE)):
        simulate(survey, band, n, seed=seed, out=folder / sub, size=size, workers=1, fits=False,
                 progress=False, shard_size=max(n, 1))
    (folder / "survey.json").write_text(json.dumps({"survey": survey, "band": band, "seed": seed}) + "\n")
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"wrote {folder} ({size / 1e6:.1f} MB)")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn, count: int, device: torch.device, repeat: int = 3) -> float:
    """Items/s of ``fn()`` (which handles ``count`` items): one warm-up call, then the best of
    ``repeat`` timed calls (the least disturbed by other work)."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return count / best


def _cutouts(folder: Path, n: int) -> list:
    from galmoss_auto.automask.predict import cutouts_from_shard
    from galmoss_auto.data_scripts.outputs import read_shard

    meta = json.loads((folder / "run.json").read_text())
    shard = read_shard(sorted((folder / "shards").glob("shard-*.npz"))[0])
    base = cutouts_from_shard(shard, float(meta["zeropoint"]))
    return [base[i % len(base)] for i in range(n)]


def _weights(name: str) -> Path:
    return Path(__file__).resolve().parents[1] / "models" / "weights" / f"{name}.safetensors"


def masker_rates(data: Path, survey: str, device, n: int, chunks, archs=MASK_ARCHS) -> dict:
    """Section 1 (see the module docstring)."""
    from galmoss_auto.automask.lightning import DEFAULTS
    from galmoss_auto.automask.maskrcnn import maskrcnn
    from galmoss_auto.automask.predict import MaskRCNNMasker

    cutouts = _cutouts(data / MASK_FOLDER, n)
    out = {"checkpoint": MASKERS[survey], "n": n, "size": MASK_SIZE, "mask_batch": {}, "network": {},
           "builders": {}}
    for chunk in chunks:
        masker = MaskRCNNMasker(checkpoint=_weights(MASKERS[survey]), chunk=chunk)
        # a chunk the network fails on falls back to sep (MASK_FAILED): its time is not the
        # network's, so say how many cutouts each method masked
        methods = [r.method for r in masker.mask_batch(cutouts[:chunk], device)]
        out.setdefault("methods", {})[chunk] = {m: methods.count(m) for m in sorted(set(methods))}
        out["mask_batch"][chunk] = rate(lambda: masker.mask_batch(cutouts, device), n, device, repeat=1)
        part = cutouts[:chunk]
        out["network"][chunk] = rate(lambda: masker._forward(part, device), len(part), device)
    chunk = max(chunks)
    z = [torch.randn(1, MASK_SIZE, MASK_SIZE, device=device) for _ in range(chunk)]
    for arch in archs:
        net = maskrcnn(backbone=arch, size=MASK_SIZE, **DEFAULTS["builder"]).to(device).eval()

        def forward():
            with torch.no_grad():
                net(z)
        out["builders"][arch] = {"parameters_M": sum(p.numel() for p in net.parameters()) / 1e6,
                                 "network": rate(forward, chunk, device)}
    return out


def initnet_rates(data: Path, survey: str, device, n: int, batches, archs=INIT_ARCHS) -> dict:
    """Section 2 (see the module docstring)."""
    from galmoss_auto.initnet.inputs import N_CHANNELS
    from galmoss_auto.initnet.lightning import build_module
    from galmoss_auto.initnet.predict import InitNetInitializer

    cutouts = _cutouts(data / INIT_FOLDER, n)
    out = {"checkpoint": INITNETS[survey], "n": n, "size": INIT_SIZE, "predict": {}, "archs": {}}
    for b in batches:
        init = InitNetInitializer(checkpoint=_weights(INITNETS[survey]), batch_size=b)
        out.setdefault("valid_fraction", {})[b] = float(np.mean(init.predict(cutouts[:b], device)[2]))
        out["predict"][b] = rate(lambda: init.predict(cutouts, device), n, device, repeat=1)
    b = max(batches)
    x = torch.randn(b, N_CHANNELS, INIT_SIZE, INIT_SIZE, device=device)
    for arch in archs:
        # as training builds it (DEFAULTS: pooling, curve-of-growth scalars)
        net = build_module(arch=arch).net.to(device).eval()
        s = torch.randn(b, net.n_scalars, device=device)
        row = {"parameters_M": sum(p.numel() for p in net.parameters()) / 1e6}
        for label, dtype in (("float32", None), ("bf16", torch.bfloat16)):
            if dtype is not None and device.type != "cuda":
                continue

            def forward():
                with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                     enabled=dtype is not None):
                    net(x, s)
            row[label] = rate(forward, b, device)
        out["archs"][arch] = row
    return out


def _step_timer():
    """A Lightning callback that records (wall time, samples) at the end of each training step."""
    import lightning as L

    class StepTimer(L.Callback):
        def __init__(self):
            self.times = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            _sync(trainer.strategy.root_device)
            self.times.append((time.perf_counter(), _batch_len(batch)))

        def samples_per_s(self, warmup: int) -> float:
            """Samples per second over the steps after the first ``warmup`` (NaN if none)."""
            t = self.times
            if len(t) <= warmup + 1:
                return float("nan")
            return sum(n for _, n in t[warmup + 1:]) / (t[-1][0] - t[warmup][0])

    return StepTimer()


def _batch_len(batch) -> int:
    """Samples in a batch: a dict of tensors (initnet) or an (images, targets) pair (automask)."""
    if isinstance(batch, dict):
        return len(next(iter(batch.values())))
    return len(batch[0])


def _fit(module, datamodule, device, steps: int, warmup: int) -> float:
    import lightning as L

    timer = _step_timer()
    trainer = L.Trainer(max_steps=steps, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                        precision="bf16-mixed" if device.type == "cuda" else "32-true", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer],
                        max_epochs=-1)
    trainer.fit(module, datamodule=datamodule)
    return timer.samples_per_s(warmup)


def training_rates(data: Path, device, steps: int, warmup: int, mask_batch: int, init_batch: int,
                   mask_arch: str = "resnet50", init_arch: str = "resnet50") -> dict:
    """Section 3 (see the module docstring)."""
    from galmoss_auto.automask import lightning as am
    from galmoss_auto.initnet import lightning as il

    torch.manual_seed(0)
    out = {"steps": steps, "warmup": warmup}
    module = am.build_module(**{**am.DEFAULTS, "arch": mask_arch})
    dm = am.build_datamodule(data / MASK_FOLDER, data / MASK_FOLDER, batch_size=mask_batch)
    out[f"maskrcnn_{mask_arch}"] = {"batch": mask_batch, "samples_per_s": _fit(module, dm, device, steps, warmup)}
    module = il.build_module(arch=init_arch)
    dm = il.build_datamodule(data / INIT_FOLDER, data / INIT_FOLDER, batch_size=init_batch)
    out[f"initnet_{init_arch}"] = {"batch": init_batch, "samples_per_s": _fit(module, dm, device, steps, warmup)}
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({cpu_model()}, {torch.get_num_threads()} torch threads)"


def _markdown(r: dict) -> str:
    m, i = r["masker"], r["initnet"]
    lines = [f"# Learned stages' throughput: {r['tag']}", "",
             f"Device: {r['device_name']}; torch {r['torch']}; survey {r['survey']}.", "",
             f"## Masker ({m['checkpoint']}, {m['size']} px, {m['n']} cutouts)", "",
             "| chunk | mask_batch cutouts/s | network alone cutouts/s |", "|---|---|---|"]
    lines += [f"| {c} | {m['mask_batch'][c]:.1f} | {m['network'][c]:.1f} |" for c in m["mask_batch"]]
    lines += ["", "Masked by (per chunk): " + "; ".join(
        f"chunk {c}: " + ", ".join(f"{k} {n}" for k, n in v.items()) for c, v in m["methods"].items())]
    lines += ["", "| builder | parameters (M) | network alone cutouts/s |", "|---|---|---|"]
    lines += [f"| {a} | {v['parameters_M']:.2f} | {v['network']:.1f} |" for a, v in m["builders"].items()]
    lines += ["", f"## Initializer ({i['checkpoint']}, {i['size']} px, {i['n']} cutouts)", "",
              "| batch | predict cutouts/s |", "|---|---|"]
    lines += [f"| {b} | {v:.1f} |" for b, v in i["predict"].items()]
    lines += ["", "Predictions inside the physical ranges (per batch): "
              + "; ".join(f"{b}: {v:.3f}" for b, v in i["valid_fraction"].items())]
    lines += ["", "| arch | parameters (M) | forward float32 cutouts/s | forward bf16 cutouts/s |", "|---|---|---|---|"]
    lines += [f"| {a} | {v['parameters_M']:.2f} | {v['float32']:.1f} | "
              + (f"{v['bf16']:.1f} |" if "bf16" in v else "- (CUDA only) |") for a, v in i["archs"].items()]
    if r.get("training"):
        t = r["training"]
        lines += ["", f"## Training ({t['steps']} steps, first {t['warmup']} untimed)", "",
                  "| network | batch | samples/s |", "|---|---|---|"]
        lines += [f"| {k} | {v['batch']} | {v['samples_per_s']:.1f} |" for k, v in t.items() if isinstance(v, dict)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--make", metavar="FOLDER", help="simulate the carried cutouts into FOLDER (needs GalSim)")
    p.add_argument("--survey", default="sdss", choices=sorted(MASKERS))
    p.add_argument("--band", default="r")
    p.add_argument("--n-mask", type=int, default=32, help="--make: 128 px cutouts for the masker")
    p.add_argument("--n-init", type=int, default=128, help="--make: 64 px cutouts for the initializer")
    p.add_argument("--seed", type=int, default=4242, help="--make: simulation seed")
    p.add_argument("--data", metavar="FOLDER", help="measure on the cutouts of FOLDER (made by --make)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n", type=int, default=4096, help="cutouts per masker / initializer measurement")
    p.add_argument("--chunks", type=int, nargs="+", default=[64, 256], help="masker chunk sizes")
    p.add_argument("--batches", type=int, nargs="+", default=[512, 4096], help="initializer batch sizes")
    p.add_argument("--train-steps", type=int, default=60, help="Lightning steps per network (0: no training)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--mask-train-batch", type=int, default=32)
    p.add_argument("--init-train-batch", type=int, default=128)
    p.add_argument("--mask-archs", nargs="+", default=list(MASK_ARCHS), choices=MASK_ARCHS,
                   help="Mask R-CNN builders timed with random weights")
    p.add_argument("--init-archs", nargs="+", default=list(INIT_ARCHS), choices=INIT_ARCHS,
                   help="initializer architectures timed with random weights")
    p.add_argument("--train-mask-arch", default="resnet50", choices=MASK_ARCHS)
    p.add_argument("--train-init-arch", default="resnet50", choices=INIT_ARCHS)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--tag", default=time.strftime("%Y-%m-%d") + "-learned-throughput")
    a = p.parse_args(argv)
    if a.make:
        make(Path(a.make), a.survey, a.band, a.n_mask, a.n_init, a.seed)
        return 0
    if not a.data:
        p.error("give --make FOLDER (here) or --data FOLDER (there)")
    data, device = Path(a.data), torch.device(a.device)
    survey = json.loads((data / "survey.json").read_text())["survey"]
    record = {"tag": a.tag, "device_name": device_name(device), "torch": torch.__version__, "survey": survey}
    record["masker"] = masker_rates(data, survey, device, a.n, a.chunks, a.mask_archs)
    print(json.dumps(record["masker"]), flush=True)
    record["initnet"] = initnet_rates(data, survey, device, a.n, a.batches, a.init_archs)
    print(json.dumps(record["initnet"]), flush=True)
    if a.train_steps > 0:
        record["training"] = training_rates(data, device, a.train_steps, a.warmup, a.mask_train_batch,
                                            a.init_train_batch, a.train_mask_arch, a.train_init_arch)
        print(json.dumps(record["training"]), flush=True)
    path = write_results(a.out, a.tag, record, _markdown(record))
    print(f"wrote {path} and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
