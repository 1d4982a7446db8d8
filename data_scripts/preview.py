"""Preview figure of a simulation: a grid of cutouts (asinh stretch) with their segmentation maps.

    python -m galmoss_auto.data_scripts.preview DIR --out preview.png [--n 8]
    galmoss-auto simulate ... --preview preview.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

__all__ = ["preview", "main"]


def _load(folder: Path, n: int) -> list[dict]:
    """The first ``n`` cutouts from the shards, or else from the per-galaxy FITS files."""
    from astropy.table import Table

    truth = Table.read(folder / "truth.ecsv")
    shard_dir = folder / "shards"
    items = []
    if shard_dir.is_dir() and any(shard_dir.glob("shard-*.npz")):
        from .outputs import read_shard
        for path in sorted(shard_dir.glob("shard-*.npz")):
            shard = read_shard(path)
            for i in range(len(shard["index"])):
                items.append({"id": str(shard["id"][i]), "image": shard["image"][i],
                              "seg": shard["segmentation"][i]})
                if len(items) == n:
                    break
            if len(items) == n:
                break
    else:
        from astropy.io import fits
        for gid in truth["id"][:n]:
            with fits.open(folder / "cutouts" / f"{gid}.fits") as hdul:
                items.append({"id": str(gid), "image": hdul[0].data, "seg": hdul["SEG"].data})
    rows = {str(r["id"]): r for r in truth[: max(n, 1) * 2]}
    for item in items:
        item["truth"] = rows.get(item["id"])
    return items


def preview(folder, out="preview.png", n: int = 8) -> Path:
    """Write a 2-row-per-cutout grid (image over segmentation) of the first ``n`` cutouts; returns
    the PNG path.  The central galaxy's truth position is marked with a cross."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    if not (folder / "truth.ecsv").is_file():
        raise FileNotFoundError(f"{folder}: no truth.ecsv (not a simulation output folder)")
    items = _load(folder, n)
    cols = min(4, len(items))
    rows = 2 * int(np.ceil(len(items) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax in axes.ravel():
        ax.axis("off")
    for k, item in enumerate(items):
        r, c = 2 * (k // cols), k % cols
        img = item["image"]
        scale = np.nanstd(img - np.nanmedian(img)) or 1.0
        axes[r, c].imshow(np.arcsinh(img / (3 * scale)), origin="lower", cmap="gray")
        seg = np.ma.masked_equal(item["seg"], 0)
        axes[r + 1, c].imshow(np.zeros_like(img), origin="lower", cmap="gray", vmin=0, vmax=1)
        axes[r + 1, c].imshow(seg % 20, origin="lower", cmap=cmap, vmin=0, vmax=19, interpolation="nearest")
        title = item["id"]
        t = item["truth"]
        if t is not None:
            comp = "sersic" if t["model"] == "sersic" else "disk"
            x, y = float(t[f"{comp}_x"]), float(t[f"{comp}_y"])
            for ax in (axes[r, c], axes[r + 1, c]):
                ax.plot(x - 1, y - 1, "+", color="red", ms=10)  # 1-based -> array index
            title += f"\nmag {float(t['total_mag']):.1f}  {t['model']}  nobj {int(t['n_contaminants'])}"
        axes[r, c].set_title(title, fontsize=7)
        axes[r + 1, c].set_title("segmentation (1 = central)", fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m galmoss_auto.data_scripts.preview", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="simulation output folder (with truth.ecsv)")
    p.add_argument("--out", default="preview.png")
    p.add_argument("--n", type=int, default=8, help="number of cutouts shown")
    args = p.parse_args(argv)
    try:
        print(preview(args.folder, args.out, args.n))
    except (OSError, ValueError) as exc:
        print(f"preview: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
