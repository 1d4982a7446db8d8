"""``--mask maskrcnn``: the learned masker, batched in the main process (GPU when present).

    masker = MaskRCNNMasker(checkpoint="automask-sdss-r.safetensors")
    results = masker.mask_batch(cutouts, torch.device("cpu"))      # list[MaskResult]

For each cutout (whose ``mask`` already holds the user mask and bad pixels, ``sigma`` set and
``meta["sky"]`` possibly the measured sky):

1. the image is normalised to asinh S/N (:mod:`.normalise`; the sky taken out first) and the
   network run on the whole chunk; cutouts are grouped by shape, so a batch gives exactly what
   one-by-one calls give;
2. detections above ``score_thresh`` are binarised; the central galaxy is picked
   (:func:`.instances.pick_central`; its class, ``central``, ``galaxy`` or ``star``, is the
   catalog's ``mask_central_class``); detections that are pieces of the central (its core, a
   second outline of it; :func:`central_footprint`) join its footprint; detections that repeat
   one other source, under another class (torchvision's NMS is per class: mask IoU > 0.5) or as
   its core inside its outline (the same piece test), are merged into one (:func:`_distinct`);
3. every other source is grown by a PSF-aware margin (``margin_fwhm`` x the PSF FWHM in image
   pixels, :func:`~galmoss_auto.fitting.cutout.psf_fwhm_px`; ``min_margin``..``max_margin`` px;
   2 px without a PSF).  A galaxy or star whose grown footprint does not touch the central's
   footprint is masked (minus the central's own pixels); one that touches it is a
   :class:`~.base.Neighbour` to fit simultaneously (the brightest ``max_neighbours`` of them;
   any more are masked).  Artefacts (bad columns, cosmic rays) are always masked, grown by
   1 px, also on top of the galaxy or a modelled neighbour;
4. a neighbour's starting parameters come from its own instance: flux-weighted centroid,
   magnitude from its flux, q and pa from its second moments, r_e from the area holding half its
   flux; n = 1.5.  Its pixels (outside the central's footprint) are the result's
   ``neighbour_pixels``: fitted, but hidden from the initializer
   (:func:`~.base.initializer_view`), which would otherwise measure a bright neighbour as the
   target.

No central detected, or a mask that leaves no pixel to fit -> the cutout is masked by sep
instead, with Flag.MASK_FALLBACK (informational: the row is what ``--mask sep`` gives, and sep's
own verdict on the central, NO_CENTRAL_DETECTION below isophotal S/N 5, still applies); the
network failing on a chunk (an exception) -> sep for the whole chunk, Flag.MASK_FAILED.  Both
have ``method == "sep"``; learned results have ``method == "maskrcnn"``.

Importing this module registers the factory as ``register_masker("maskrcnn", ...)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from galmoss_auto.fitting.conventions import wrap_pa_deg
from galmoss_auto.fitting.cutout import Cutout, psf_fwhm_px
from galmoss_auto.fitting.flags import Flag

from .base import MaskResult, Neighbour, register_masker
from .detect import grow
from .instances import Instances, decode, mask_iou, pick_central
from .maskrcnn import ARTEFACT, CENTRAL, CLASSES, GALAXY, STAR
from .normalise import normalise_batch

__all__ = ["MaskRCNNMasker", "MaskDetails", "instance_params", "cutouts_from_shard"]

log = logging.getLogger(__name__)


@dataclass
class MaskDetails:
    """What the network saw in one cutout (for evaluation and figures): all instances, the
    central's index (-1: none) and footprint, the neighbours' instance masks, the margin (px)."""

    instances: Instances | None
    central: int = -1
    central_mask: np.ndarray | None = None
    neighbour_masks: list = field(default_factory=list)
    margin: int = 0


def instance_params(image: np.ndarray, mask: np.ndarray, zeropoint: float, kind: str) -> dict:
    """Catalog-convention starting values of one source from its instance pixels.

    image : sky-subtracted (image units); mask : the instance (bool).  Returns x, y (1-based),
    mag; for galaxies also r_e (major-axis px, >= 0.5), n (1.5), q (b/a in [0.1, 1]), pa (deg CCW
    from +y, in (-90, 90]).
    """
    rows, cols, f = _pixel_weights(image, mask)
    total = f.sum()
    flux = float(np.clip(image[rows, cols], 0.0, None).sum()) or 1e-3
    x = float((f * cols).sum() / total)
    y = float((f * rows).sum() / total)
    out = {"x": x + 1.0, "y": y + 1.0, "mag": float(zeropoint - 2.5 * math.log10(max(flux, 1e-30)))}
    if kind == "star":
        return out
    dx, dy = cols - x, rows - y
    cxx, cyy, cxy = (f * dx * dx).sum() / total, (f * dy * dy).sum() / total, (f * dx * dy).sum() / total
    tr, det = cxx + cyy, cxx * cyy - cxy * cxy
    disc = math.sqrt(max(tr * tr / 4 - det, 0.0))
    l1, l2 = tr / 2 + disc, max(tr / 2 - disc, 1e-6)
    q = float(np.clip(math.sqrt(l2 / l1) if l1 > 0 else 1.0, 0.1, 1.0))
    theta = 0.5 * math.degrees(math.atan2(2 * cxy, cxx - cyy))  # major axis, CCW from +x
    order = np.sort(f)[::-1]
    area = int(np.searchsorted(np.cumsum(order), 0.5 * total) + 1)
    r_e = max(math.sqrt(area / (math.pi * q)), 0.5)
    pa = float(wrap_pa_deg(torch.tensor(theta - 90.0, dtype=torch.float64)))
    return out | {"r_e": r_e, "n": 1.5, "q": q, "pa": pa}


def _sky_level(cutout) -> float | None:
    sky = cutout.meta.get("sky") if cutout.meta else None
    if sky is None:
        return None
    level = getattr(sky, "level", None)
    if level is None and isinstance(sky, (tuple, list)):
        level = sky[0]
    return None if level is None or not np.isfinite(level) else float(level)


def _sky_rms(cutout) -> float:
    sky = cutout.meta.get("sky") if cutout.meta else None
    rms = getattr(sky, "rms", None)
    if rms is None and isinstance(sky, (tuple, list)) and len(sky) > 1:
        rms = sky[1]
    return float(rms) if rms is not None else float("nan")


class MaskRCNNMasker:
    """The learned batch masker (see the module docstring).

    checkpoint : a zoo checkpoint (``.safetensors``, loaded hash-checked by
        :func:`galmoss_auto.models.load_checkpoint`; ``sha256`` to insist on one file); or
    network : an ``nn.Module`` already built (training / evaluation).
    score_thresh : detection score cut (in (0, 1); default the entry's, else 0.5).
    max_neighbours : K, most overlapping sources fitted per cutout (>= 0; default 3).
    margin_fwhm : growth of masked sources in PSF FWHMs (>= 0; default 1.0), clipped to
        [min_margin, max_margin] px (defaults 1, 8).
    max_central_distance : as the sep masker (fraction of the smaller side; default 0.25).
    piece_distance, piece_overlap : a detection whose centroid lies within half a PSF FWHM of
        the central's, or within ``piece_distance`` x the central's radius while
        ``piece_overlap`` of the smaller mask lies in the other, is a piece of the target, not a
        neighbour (:func:`central_footprint`; piece_distance >= 0, 0 = no pieces, default 0.3;
        piece_overlap in [0, 1], default 0.8).  The same test merges the detections of one
        neighbour (its core and its outline) into one, fitted once (:func:`_distinct`).
    symmetric : a galaxy detection touching the central's footprint whose light is matched, to
        this fraction, by the image point-mirrored through the central's peak is a piece of
        the central too (a disc's ends; :func:`symmetric_fraction`; in [0, 1], 0 = off;
        default 0.7).
    chunk : cutouts per forward pass (>= 1; default 64).
    sep_options : settings of the sep fallback masker.
    """

    name = "maskrcnn"
    batched = True

    def __init__(self, checkpoint=None, *, network=None, sha256: str | None = None, device=None,
                 score_thresh: float | None = None, mask_thresh: float = 0.5, max_neighbours: int = 3,
                 margin_fwhm: float = 1.0, min_margin: int = 1, max_margin: int = 8,
                 max_central_distance: float = 0.25, piece_distance: float = 0.3,
                 piece_overlap: float = 0.8, symmetric: float = 0.7, chunk: int = 64,
                 sep_options: dict | None = None):
        if (checkpoint is None) == (network is None):
            raise ValueError("give a checkpoint file or a network (exactly one)")
        self.entry = {}
        if checkpoint is not None:
            from galmoss_auto.models import build_model, load_checkpoint
            state, entry = load_checkpoint(checkpoint, sha256)
            network = build_model(entry, {k: v.float() if v.is_floating_point() else v for k, v in state.items()})
            self.entry = entry
            self.checkpoint = str(checkpoint)
        if score_thresh is None:
            score_thresh = float((self.entry.get("output") or {}).get("score_thresh", 0.5))
        if not 0.0 < score_thresh < 1.0:
            raise ValueError(f"score_thresh must be in (0, 1), got {score_thresh}")
        if not 0.0 < mask_thresh < 1.0:
            raise ValueError(f"mask_thresh must be in (0, 1), got {mask_thresh}")
        if int(max_neighbours) < 0:
            raise ValueError(f"max_neighbours must be >= 0, got {max_neighbours}")
        if not margin_fwhm >= 0:
            raise ValueError(f"margin_fwhm must be >= 0, got {margin_fwhm}")
        if not 0 <= int(min_margin) <= int(max_margin):
            raise ValueError(f"need 0 <= min_margin <= max_margin, got {min_margin}, {max_margin}")
        if int(chunk) < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        if not piece_distance >= 0:
            raise ValueError(f"piece_distance must be >= 0 (a fraction of the central's radius), got {piece_distance}")
        if not 0.0 <= piece_overlap <= 1.0:
            raise ValueError(f"piece_overlap must be in [0, 1], got {piece_overlap}")
        self.piece_distance = float(piece_distance)
        self.piece_overlap = float(piece_overlap)
        if not 0.0 <= symmetric <= 1.0:
            raise ValueError(f"symmetric must be in [0, 1] (0 = no mirror test), got {symmetric}")
        self.symmetric = float(symmetric)
        self.network = network.eval()
        heads = getattr(network, "roi_heads", None)
        if checkpoint is not None and heads is not None and hasattr(heads, "score_thresh"):
            # detections below the masker's cut are dropped anyway: not making them (nor pasting
            # their masks onto the cutout) gives the same result, faster (only for a network this
            # masker built: one handed in is left as it is)
            heads.score_thresh = max(float(heads.score_thresh), float(score_thresh))
        self.score_thresh, self.mask_thresh = float(score_thresh), float(mask_thresh)
        self.max_neighbours, self.margin_fwhm = int(max_neighbours), float(margin_fwhm)
        self.min_margin, self.max_margin = int(min_margin), int(max_margin)
        self.max_central_distance, self.chunk = float(max_central_distance), int(chunk)
        self.sep_options = dict(sep_options or {})
        self.device = torch.device(device) if device is not None else None

    # -- the batch call -------------------------------------------------------------------------
    def __call__(self, cutout) -> MaskResult:
        return self.mask_batch([cutout], self.device or torch.device("cpu"))[0]

    def mask_batch(self, cutouts: list, device=None, return_details: bool = False):
        """One :class:`MaskResult` per cutout, in order (with ``return_details`` also a
        :class:`MaskDetails` per cutout)."""
        device = torch.device(device if device is not None else (self.device or "cpu"))
        cutouts = list(cutouts)
        results: list = [None] * len(cutouts)
        details: list = [MaskDetails(None)] * len(cutouts)
        groups: dict = {}
        for i, c in enumerate(cutouts):
            groups.setdefault(tuple(c.shape), []).append(i)
        for idx in groups.values():
            for start in range(0, len(idx), self.chunk):
                part = idx[start:start + self.chunk]
                try:
                    outputs = self._forward([cutouts[i] for i in part], device)
                except Exception as exc:  # any network failure: sep for this chunk, flagged
                    log.warning("maskrcnn failed on %d cutouts (%s: %s); using sep", len(part),
                                type(exc).__name__, exc)
                    for i in part:
                        results[i] = self._fallback(cutouts[i], Flag.MASK_FAILED)
                    continue
                for i, out in zip(part, outputs):
                    results[i], details[i] = self._result(cutouts[i], out)
        return (results, details) if return_details else results

    def _forward(self, cutouts, device):
        net = self.network.to(device)
        image = torch.from_numpy(np.stack([c.image for c in cutouts]).astype(np.float32)).to(device)
        sigma = np.stack([c.sigma if c.sigma is not None else np.full(c.shape, _sigma_guess(c)) for c in cutouts])
        sigma = torch.from_numpy(sigma.astype(np.float32)).to(device)
        bad = torch.from_numpy(np.stack([c.mask for c in cutouts])).to(device)
        levels = [_sky_level(c) for c in cutouts]
        background = None
        if all(v is not None for v in levels):
            background = torch.tensor(levels, dtype=torch.float32, device=device)
        elif any(v is not None for v in levels):
            background = torch.tensor([0.0 if v is None else v for v in levels], device=device)
        z = normalise_batch(image, sigma, bad, background)
        if background is not None and any(v is None for v in levels):
            # a chunk mixing cutouts with and without a measured sky: estimate the missing ones
            missing = [k for k, v in enumerate(levels) if v is None]
            z[missing] = normalise_batch(image[missing], sigma[missing], bad[missing])
        with torch.no_grad():
            return net([zz[None] for zz in z])

    # -- one cutout ------------------------------------------------------------------------------
    def _margin(self, fwhm: float | None) -> int:
        """Growth (px) of a masked source for a PSF of ``fwhm`` image pixels (None: no PSF)."""
        if fwhm is None:
            return max(self.min_margin, min(2, self.max_margin))
        return int(np.clip(round(self.margin_fwhm * fwhm), self.min_margin, self.max_margin))

    def _result(self, cutout, output):
        inst = decode(output, self.score_thresh, self.mask_thresh)
        k = pick_central(inst, cutout.shape, self.max_central_distance)
        if k < 0:
            # e.g. ProFit's G278109 (SDSS, a bright bulge in a disk filling a 101 x 197 stamp):
            # no detection covers its core; sep finds it at isophotal S/N 735
            return self._fallback(cutout, Flag.MASK_FALLBACK), MaskDetails(inst)
        psf_fwhm = psf_fwhm_px(cutout.psf, cutout.psf_oversampling)
        margin = self._margin(psf_fwhm)
        fwhm = psf_fwhm or 2.0
        sky = _sky_level(cutout) or 0.0
        data = np.where(cutout.mask, 0.0, cutout.image - sky)
        central, pieces = central_footprint(inst, k, data, fwhm, self.piece_distance, self.piece_overlap,
                                            self.symmetric)
        central_grown = grow(central, margin)
        mask = np.zeros(cutout.shape, bool)
        artefacts = np.zeros(cutout.shape, bool)
        candidates = []
        for j, m in _distinct(inst, k, data, fwhm, exclude=pieces, piece_distance=self.piece_distance,
                              piece_overlap=self.piece_overlap):
            if inst.labels[j] == ARTEFACT:
                artefacts |= grow(m, 1)
                continue
            grown = grow(m, margin)
            if (grown & central_grown).any() and inst.labels[j] in (GALAXY, STAR):
                candidates.append((float(np.clip(data[m], 0, None).sum()), j, grown, m))
            else:
                mask |= grown & ~central
        candidates.sort(key=lambda t: -t[0])
        neighbours, nb_masks = [], []
        for rank, (_, j, grown, m) in enumerate(candidates):
            if rank >= self.max_neighbours:
                mask |= grown & ~central
                continue
            kind = "star" if inst.labels[j] == STAR else "galaxy"
            # started from its best detection's own pixels: the union of its repeats reaches
            # further into the target's light and pulls the start towards the target
            params = instance_params(data, inst.masks[j], cutout.zeropoint, kind)
            neighbours.append(Neighbour(kind=kind, params=params, label=j + 1))
            nb_masks.append(m)
        nb_pixels = np.zeros(cutout.shape, bool)
        for m in nb_masks:
            nb_pixels |= m
        mask &= ~nb_pixels  # a modelled neighbour's own pixels stay in the fit ...
        mask |= artefacts   # ... but not a cosmic ray or bad column on top of it
        mask &= ~cutout.mask
        nb_pixels &= ~central
        columns = {"mask_n_objects": int(len(inst)), "mask_n_masked": int(mask.sum()),
                   "mask_frac": float(np.mean(mask | cutout.mask)), "mask_n_neighbours": len(neighbours),
                   "mask_central_score": float(inst.scores[k]),
                   "mask_central_class": CLASSES[int(inst.labels[k])], "sky_level": _sky_level(cutout) or float("nan"),
                   "sky_rms": _sky_rms(cutout)}
        details = MaskDetails(inst, k, central, nb_masks, margin)
        if np.all(mask | cutout.mask):
            return self._fallback(cutout, Flag.MASK_FALLBACK), details
        return MaskResult(mask=mask, flags=0, columns=columns, neighbours=neighbours, method="maskrcnn",
                          neighbour_pixels=nb_pixels if nb_masks else None), details

    def _fallback(self, cutout, flag: Flag) -> MaskResult:
        from .sep_masker import SepMasker
        try:
            res = SepMasker(**self.sep_options)(cutout)
        except Exception as exc:  # sep itself failed: user mask and bad pixels only
            log.warning("%s: sep fallback failed too (%s)", cutout.id, exc)
            res = MaskResult(mask=np.zeros(cutout.shape, bool), flags=int(Flag.MASK_FAILED),
                             columns={"mask_n_objects": -1, "mask_n_masked": 0,
                                      "mask_frac": float(np.mean(cutout.mask)), "sky_level": float("nan"),
                                      "sky_rms": float("nan")})
        res.flags = int(res.flags) | int(flag)
        res.method = "sep"
        res.columns = dict(res.columns) | {"mask_n_neighbours": 0, "mask_central_score": float("nan"),
                                           "mask_central_class": ""}
        return res


def _distinct(inst: Instances, central: int, data: np.ndarray, fwhm: float, iou: float = 0.5, exclude=(),
              piece_distance: float = 0.3, piece_overlap: float = 0.8) -> list[tuple[int, np.ndarray]]:
    """The detections other than the central (and ``exclude``) grouped into distinct objects:
    (the highest-scored detection of each, the union of their masks), highest score first.

    torchvision's NMS runs per class, so one source can come back as a galaxy and as a star;
    class-agnostically, a detection whose mask overlaps the central's with IoU > ``iou`` is the
    same object and dropped.  A detection that overlaps a higher-scored object's that much, or
    is a piece of it (:func:`_is_piece`, the test :func:`central_footprint` applies to the
    central, with ``piece_distance`` and ``piece_overlap``), joins that object: the network
    often returns a faint neighbour twice or three times, a small mask inside a larger one with
    centroids < 1 px apart (on the held-out sets, in 22 of the 81 sdss cutouts with neighbours),
    and two Sérsics fitted to one source are degenerate: both ran off to zero flux while the
    target took the light.  (A blend on top of the central overlaps its mask, but with a small
    IoU and its own centroid: it is kept.)"""
    ious = mask_iou(inst.masks, inst.masks)
    groups: list = []
    for j in np.argsort(-inst.scores, kind="stable"):
        j = int(j)
        if j == central or j in exclude or ious[j, central] > iou:
            continue
        centroid, area = _centroid(data, inst.masks[j]), int(inst.masks[j].sum())
        for g in groups:
            # an artefact (a cosmic ray on a galaxy, say) is masked, never a piece of a source
            sources = ARTEFACT not in (inst.labels[j], inst.labels[g["members"][0]])
            if ious[j, g["members"]].max() > iou or (sources and _is_piece(
                    centroid, area, inst.masks[j], g["centroid"], g["area"], g["mask"], fwhm, piece_distance,
                    piece_overlap)):
                g["members"].append(j)
                g["mask"] = g["mask"] | inst.masks[j]
                break
        else:
            groups.append({"members": [j], "mask": inst.masks[j].copy(), "centroid": centroid, "area": area})
    return [(g["members"][0], g["mask"]) for g in groups]


def _is_piece(centroid, area: int, mask: np.ndarray, other_centroid, other_area: int, other_mask: np.ndarray,
              fwhm: float, piece_distance: float, piece_overlap: float) -> bool:
    """Whether a detection (flux-weighted ``centroid`` (x, y), ``area`` px, ``mask``) is a piece
    of another object: its centroid within half of ``fwhm`` (px) of the other's, or within
    ``piece_distance`` x the other's radius (sqrt(area / pi)) while ``piece_overlap`` of the
    smaller of the two masks lies in the other (``piece_distance`` = 0: never)."""
    if not piece_distance > 0:
        return False
    d = math.hypot(centroid[0] - other_centroid[0], centroid[1] - other_centroid[1])
    if d <= 0.5 * fwhm:
        return True
    overlap = (mask & other_mask).sum() / max(min(area, other_area), 1)
    return d <= piece_distance * math.sqrt(other_area / math.pi) and overlap >= piece_overlap


def central_footprint(inst: Instances, central: int, data: np.ndarray, fwhm: float,
                      piece_distance: float = 0.3, piece_overlap: float = 0.8,
                      symmetric: float = 0.0) -> tuple[np.ndarray, set]:
    """The central's footprint: its mask joined by the detections that are pieces of it, and
    the indices of those pieces.

    The network sometimes returns one galaxy as several instances (its core, its inner disc, a
    half), and the one picked as the central may be the smaller; fitted as neighbours at the
    target's own centre, the others would take part of its light (on hsc, 20 of the 23
    detections within 0.3 central radii of the central's centroid were such pieces; the 3
    others were sources at the very centre, which no fit separates).  A central, galaxy or
    star detection is a piece when its flux-weighted centroid (on ``data``, the sky-subtracted
    image) lies within half of ``fwhm`` (px, the PSF's) of the central's, or within
    ``piece_distance`` x the central's radius (sqrt(area / pi)) while ``piece_overlap`` of the
    smaller of the two masks lies in the other.  Pieces join the footprint one at a time
    (nearest first), the centroid and radius following it.  ``piece_distance`` = 0 turns both
    tests off.  Half a FWHM, not more: in SDSS (FWHM ~3.5 px) real blends lie 2-4 px from the
    target, and merging everything within a whole FWHM cost more than the pieces it caught.

    Then, with ``symmetric`` > 0, a central or galaxy detection touching the footprint whose
    light the mirror image through the central's peak matches to at least that fraction
    (:func:`symmetric_fraction`) joins it too: the ends of an inclined disc that the network
    cut off as "galaxies" (on ProFit's GAMA SDSS stamps they took up to 0.38 mag of the
    target's light)."""
    foot = inst.masks[central].copy()
    pieces: set = set()
    candidates = [j for j in range(len(inst)) if j != central and inst.labels[j] in (CENTRAL, GALAXY, STAR)]
    # a detection's centroid and area do not change while the footprint grows: measured once
    centroids = {j: _centroid(data, inst.masks[j]) for j in candidates}
    areas = {j: int(inst.masks[j].sum()) for j in candidates}
    while piece_distance > 0:
        cx, cy = _centroid(data, foot)
        area = int(foot.sum())
        best = None
        for j in candidates:
            if j in pieces:
                continue
            d = math.hypot(centroids[j][0] - cx, centroids[j][1] - cy)
            if _is_piece(centroids[j], areas[j], inst.masks[j], (cx, cy), area, foot, fwhm, piece_distance,
                         piece_overlap) and (best is None or d < best[0]):
                best = (d, j)
        if best is None:
            break
        pieces.add(best[1])
        foot |= inst.masks[best[1]]
    if symmetric > 0:
        # pieces the network cut off the central's own light (a disc's two ends, the outer
        # half of a bulge): mirrored through the central's peak, their light is matched by
        # the galaxy's other side; a real neighbour's is not (it is an excess on one side)
        cm = inst.masks[central]
        top = np.unravel_index(np.argmax(np.where(cm, _smoothed(data), -np.inf)), cm.shape)
        mirrored = [j for j in candidates if j not in pieces and inst.labels[j] != STAR
                    and symmetric_fraction(data, inst.masks[j], top) >= symmetric]
        changed = True
        while changed:
            changed = False
            touching = grow(foot, 1)
            for j in mirrored:
                if j not in pieces and (inst.masks[j] & touching).any():
                    pieces.add(j)
                    foot |= inst.masks[j]
                    changed = True
    return foot, pieces


def _smoothed(data: np.ndarray, smooth: float = 1.0) -> np.ndarray:
    """``data`` convolved with a Gaussian of ``smooth`` px (zero padding), float32.

    A separable sum of shifted copies.  The post-processing calls it on one small image at a
    time, right after the network ran, where a torch convolution's per-call overhead dominated:
    the post-processing took 4.3-6.7 ms per 128 px cutout with it and 3.2-3.3 ms with this."""
    half = max(1, int(math.ceil(3 * smooth)))
    k = np.exp(-0.5 * (np.arange(-half, half + 1, dtype=np.float32) / np.float32(smooth)) ** 2)
    k = k / k.sum()
    h, w = data.shape
    pad = np.pad(np.asarray(data, np.float32), half)
    rows = sum(kk * pad[:, i:i + w] for i, kk in enumerate(k))
    return sum(kk * rows[i:i + h, :] for i, kk in enumerate(k))


def symmetric_fraction(data: np.ndarray, mask: np.ndarray, centre) -> float:
    """The fraction of the light of ``mask``'s pixels that the image point-mirrored through
    ``centre`` (row, col; pixel indices) matches: sum(min(d, d_mirror)) / sum(d) over the
    pixels whose mirror lies in the image, with d = max(data, 0).  1 for a piece of a
    point-symmetric galaxy, small for light that has no counterpart on the other side (the
    template test of SDSS's deblender).  0 when nothing is left to compare."""
    rows, cols = np.nonzero(mask)
    r2, c2 = 2 * int(centre[0]) - rows, 2 * int(centre[1]) - cols
    ok = (r2 >= 0) & (r2 < data.shape[0]) & (c2 >= 0) & (c2 < data.shape[1])
    if not ok.any():
        return 0.0
    d = np.clip(data[rows[ok], cols[ok]], 0.0, None)
    m = np.clip(data[r2[ok], c2[ok]], 0.0, None)
    total = d.sum()
    return float(np.minimum(d, m).sum() / total) if total > 0 else 0.0


def _pixel_weights(data: np.ndarray, mask: np.ndarray):
    """Rows, columns and flux weights of the pixels of ``mask`` (negative pixels weigh 0; all
    weigh 1 where none is positive)."""
    rows, cols = np.nonzero(mask)
    f = np.clip(data[rows, cols], 0.0, None)
    if not f.sum() > 0:
        f = np.ones_like(f)
    return rows, cols, f


def _centroid(data: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Flux-weighted (x, y) of the pixels of ``mask`` (0-based; see :func:`_pixel_weights`)."""
    rows, cols, f = _pixel_weights(data, mask)
    return float((f * cols).sum() / f.sum()), float((f * rows).sum() / f.sum())


def _sigma_guess(cutout) -> float:
    """Noise level of a cutout without a sigma map (the pipeline normally sets one)."""
    rms = _sky_rms(cutout)
    if np.isfinite(rms) and rms > 0:
        return rms
    good = cutout.image[~cutout.mask]
    mad = 1.4826 * np.median(np.abs(good - np.median(good))) if good.size else 1.0
    return float(mad) if mad > 0 else 1.0


def cutouts_from_shard(shard: dict, zeropoint: float = 0.0, indices=None) -> list[Cutout]:
    """Cutouts (image, sigma, psf; ``meta["shard_index"]``) from a simulation shard dict."""
    idx = range(len(shard["index"])) if indices is None else indices
    return [Cutout(id=str(shard["id"][i]), image=shard["image"][i].astype(np.float64),
                   sigma=shard["sigma"][i].astype(np.float64), psf=shard["psf"][i].astype(np.float64),
                   zeropoint=float(zeropoint), meta={"shard_index": int(i)}) for i in idx]


def _factory(checkpoint=None, **options) -> MaskRCNNMasker:
    if checkpoint is None:
        raise ValueError("--mask maskrcnn needs a checkpoint (a zoo entry for the survey and band, "
                         "--weights NAME|FILE, or --zoo DIR); none was given")
    return MaskRCNNMasker(checkpoint, **options)


register_masker("maskrcnn", _factory)
