"""Training items for the initializer: simulated shards and real cutouts with labels.

An *item* is a dict: ``image``, ``sigma`` (H, W float32), ``mask`` (H, W bool, True = bad),
``psf`` (h, w float32, unit sum), ``psf_oversampling`` (PSF pixels per image pixel),
``psf_includes_pixel``, ``zeropoint``, ``pixel_scale`` (floats), ``target`` (dict of
the central galaxy's single-Sérsic parameters in catalog conventions: x, y 1-based, mag, r_e px,
n, q, pa deg) and ``id``.  :func:`collate` pads a list of items of any sizes into a batch.

* :class:`SimItems` streams simulation folders (``simulate()`` outputs) through
  :class:`~galmoss_auto.data_scripts.shards.ShardDataset`; the mask is the contaminants'
  segmentation footprints (labels >= 2) grown by one pixel, standing in for the masker.
  Centrals without a single-Sérsic truth (bulge+disk populations) are skipped.
* :func:`labelled_items` makes the items of real cutouts with labels from a catalog of the
  pipeline's own converged fits with no quality flag
  (:func:`~galmoss_auto.fitting.flags.is_clean_fit`: informational bits such as
  SIGMA_ESTIMATED allowed), the self-training recipe.  Each is read as the initializer reads it
  in ``run`` (:func:`~galmoss_auto.initnet.inputs.cutout_arrays`: measured sky removed, the PSF
  at its own sampling).  The data module writes them to an item store on disk
  (:mod:`galmoss_auto.data_scripts.item_store`) and streams them from there with
  the simulated ones (:class:`~galmoss_auto.data_scripts.item_store.Mixed`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from galmoss_auto.data_scripts.shards import ShardDataset

from galmoss_auto.fitting.flags import is_clean_fit

from .inputs import cutout_arrays, pad_arrays

__all__ = ["TARGET_KEYS", "SimItems", "labelled_items", "collate", "labels_from_catalog"]

TARGET_KEYS = ("x", "y", "mag", "r_e", "n", "q", "pa")


def _grow(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _folder_meta(folder: Path) -> dict:
    run = folder / "run.json"
    if not run.is_file():
        raise FileNotFoundError(f"{folder}: no run.json (not a simulate() output folder)")
    meta = json.loads(run.read_text())
    for key in ("zeropoint", "pixel_scale"):
        if key not in meta:
            raise ValueError(f"{run}: lacks {key!r}")
    return meta


class SimItems(torch.utils.data.IterableDataset):
    """Items from one simulation folder; ``shuffle`` permutes shards and cutouts per epoch."""

    def __init__(self, folder, shuffle: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                 limit: int | None = None):
        super().__init__()
        self.folder = Path(folder)
        meta = _folder_meta(self.folder)
        self.zeropoint, self.pixel_scale = float(meta["zeropoint"]), float(meta["pixel_scale"])
        self.survey, self.band = meta.get("survey", ""), meta.get("band", "")
        self.shards = ShardDataset(self.folder, keys=("image", "sigma", "psf", "segmentation"),
                                   shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)
        self.limit = limit

    def set_epoch(self, epoch: int) -> None:
        self.shards.set_epoch(epoch)

    def __len__(self):
        n = len(self.shards)
        return n if self.limit is None else min(n, self.limit)

    def __iter__(self):
        count = 0
        for it in self.shards:
            if self.limit is not None and count >= self.limit:
                return
            t = it["truth"]
            target = {k: t.get(f"sersic_{k}", math.nan) for k in TARGET_KEYS}
            if not all(math.isfinite(v) for v in target.values()):
                continue
            seg = it["segmentation"].numpy()
            mask = _grow(seg >= 2)
            count += 1
            yield {"image": it["image"], "sigma": it["sigma"], "mask": torch.from_numpy(mask),
                   "psf": it["psf"], "psf_oversampling": 1.0, "psf_includes_pixel": True,
                   "zeropoint": self.zeropoint, "pixel_scale": self.pixel_scale,
                   "target": target, "id": it["id"],
                   "psf_fwhm_arcsec": t.get("psf_fwhm", math.nan)}


def labels_from_catalog(catalog, component: str = "sersic") -> dict:
    """{id: target dict} from a fit catalog (astropy Table or path): rows whose flags hold no
    quality bit (:func:`~galmoss_auto.fitting.flags.is_clean_fit`) and finite
    ``<component>_<p>`` values; a catalog without ``flags`` is used whole."""
    from astropy.table import Table

    table = catalog if hasattr(catalog, "colnames") else Table.read(str(catalog))
    where = getattr(catalog, "meta", {}).get("source", str(catalog) if not hasattr(catalog, "colnames") else "labels")
    need = ["id"] + [f"{component}_{k}" for k in TARGET_KEYS]
    missing = [c for c in need if c not in table.colnames]
    if missing:
        raise ValueError(f"{where}: label catalog lacks column(s) {missing}")
    out = {}
    flags = np.asarray(table["flags"]) if "flags" in table.colnames else np.zeros(len(table), int)
    for row, clean in zip(table, np.atleast_1d(is_clean_fit(flags))):
        if not clean:
            continue
        vals = {k: float(row[f"{component}_{k}"]) for k in TARGET_KEYS}
        if all(math.isfinite(v) for v in vals.values()):
            out[str(row["id"]).strip()] = vals
    return out


def labelled_items(cutouts, labels: dict):
    """Items of real cutouts (any iterable of :class:`~galmoss_auto.fitting.cutout.Cutout`,
    masks applied, as the initializer sees them:
    :func:`galmoss_auto.pipelines.run.prepare_training_cutouts` gives them) with labels
    ``{id: target}`` (see :func:`labels_from_catalog`), one at a time; cutouts without a label
    are passed over.  Raises ValueError for a labelled cutout without a PSF."""
    for c in cutouts:
        target = labels.get(str(c.id))
        if target is None:
            continue
        if c.psf is None:
            raise ValueError(f"{c.source or c.id}: fine-tuning needs a PSF for every cutout")
        a = cutout_arrays(c)
        yield {"image": a["image"], "sigma": a["sigma"], "mask": a["mask"], "psf": a["psf"],
               "psf_oversampling": float(a["oversampling"]),
               "psf_includes_pixel": bool(a["psf_includes_pixel"]),
               "zeropoint": float(c.zeropoint),
               "pixel_scale": float(c.pixel_scale) if c.pixel_scale else math.nan,
               "target": dict(target), "id": str(c.id), "psf_fwhm_arcsec": math.nan}


def collate(items: list[dict]) -> dict:
    """Pad items into a batch: image/sigma/mask (B, H, W) (padding masked), psf (B, h, w)
    (zero-padded around its centre to the largest odd size), zeropoint/pixel_scale/
    oversampling (B,), psf_includes_pixel (B,) bool, target (B, 7) float64 in TARGET_KEYS
    order, shapes, ids."""
    image, sigma, mask, psf = (torch.from_numpy(a) for a in pad_arrays(items))
    target = torch.tensor([[it["target"][k] for k in TARGET_KEYS] for it in items], dtype=torch.float64)
    return {"image": image, "sigma": sigma, "mask": mask, "psf": psf,
            "zeropoint": torch.tensor([it["zeropoint"] for it in items], dtype=torch.float32),
            "pixel_scale": torch.tensor([it["pixel_scale"] for it in items], dtype=torch.float32),
            "oversampling": torch.tensor([float(it.get("psf_oversampling", 1.0)) for it in items]),
            "psf_includes_pixel": torch.tensor([bool(it.get("psf_includes_pixel", True)) for it in items]),
            "target": target, "shapes": [tuple(it["image"].shape) for it in items],
            "ids": [it["id"] for it in items],
            "psf_fwhm_arcsec": torch.tensor([it.get("psf_fwhm_arcsec", math.nan) for it in items])}
