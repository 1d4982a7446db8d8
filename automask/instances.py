"""Instances: simulator truth -> Mask R-CNN targets, network output -> binary instances, and the
mask metrics (IoU, recall, AP50) shared by training, evaluation and the masker.

Classes are :data:`galmoss_auto.automask.maskrcnn.CLASSES`; the simulator's object kinds map to
them through :data:`KIND_TO_CLASS` (a blend is an other galaxy, a bright star's halo a star,
bad columns and cosmic rays artefacts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .maskrcnn import ARTEFACT, CENTRAL, GALAXY, STAR

__all__ = ["KIND_TO_CLASS", "MIN_PIXELS", "targets_from_segmentation", "Instances", "decode",
           "pick_central", "mask_iou", "average_precision"]

KIND_TO_CLASS = {"central": CENTRAL, "galaxy": GALAXY, "blend": GALAXY, "star": STAR,
                 "bright_star": STAR, "bad_column": ARTEFACT, "cosmic_ray": ARTEFACT}
#: Truth footprints smaller than this (px) are not training targets (below any detection limit;
#: artefacts, which are thin, count from 1 px).
MIN_PIXELS = 4


def targets_from_segmentation(seg: np.ndarray, classes: dict[int, int],
                              min_pixels: int = MIN_PIXELS) -> dict[str, torch.Tensor]:
    """torchvision detection targets from a segmentation map.

    seg : (H, W) int, 0 = sky, k = object with label k.
    classes : label -> class (see :data:`KIND_TO_CLASS`); labels absent here are ignored.
    Returns {"boxes": (N, 4) float32 x0, y0, x1, y1 (pixel edges), "labels": (N,) int64,
    "masks": (N, H, W) uint8, "seg_labels": (N,) int64 (the segmentation label of each)}.
    """
    seg = np.asarray(seg)
    labels = np.unique(seg)
    boxes, cls, masks, keep = [], [], [], []
    for lab in labels[labels > 0]:
        c = classes.get(int(lab))
        if c is None:
            continue
        m = seg == lab
        if m.sum() < (1 if c == ARTEFACT else min_pixels):
            continue
        rows, cols = np.nonzero(m)
        boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        cls.append(c)
        masks.append(m)
        keep.append(int(lab))
    h, w = seg.shape
    return {"boxes": torch.tensor(np.asarray(boxes, np.float32).reshape(-1, 4)),
            "labels": torch.tensor(np.asarray(cls, np.int64)),
            "masks": torch.from_numpy(np.asarray(masks, np.uint8).reshape(-1, h, w)),
            "seg_labels": torch.tensor(np.asarray(keep, np.int64))}


@dataclass
class Instances:
    """Detections of one cutout: labels (N,), scores (N,), masks (N, H, W) bool, boxes (N, 4)."""

    labels: np.ndarray
    scores: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray

    def __len__(self):
        return len(self.labels)

    def select(self, keep) -> "Instances":
        return Instances(self.labels[keep], self.scores[keep], self.masks[keep], self.boxes[keep])


def decode(output: dict, score_thresh: float = 0.5, mask_thresh: float = 0.5) -> Instances:
    """A torchvision Mask R-CNN output dict -> :class:`Instances` above ``score_thresh``, masks
    binarised at ``mask_thresh`` (empty masks dropped)."""
    scores = output["scores"].detach().float().cpu().numpy()
    keep = scores >= score_thresh
    masks = (output["masks"].detach()[:, 0].float().cpu().numpy() >= mask_thresh)[keep]
    inst = Instances(output["labels"].detach().cpu().numpy()[keep].astype(np.int64), scores[keep],
                     masks, output["boxes"].detach().float().cpu().numpy()[keep])
    return inst.select(inst.masks.any(axis=(1, 2))) if len(inst) else inst


def pick_central(inst: Instances, shape: tuple[int, int], max_distance: float = 0.25) -> int:
    """Index of the central galaxy among ``inst``, or -1.

    Central-class detections whose mask covers the cutout centre (the 2x2 block around it for
    even sizes) win, the highest score first; then central-class detections whose mask centroid
    lies within ``max_distance`` x the smaller side of the centre; then, if the network called the
    target an "other galaxy", a galaxy-class detection covering the centre; last, a star-class
    detection covering the centre.  The last rule matters: a galaxy of r_e ~ 1-3 px under a
    3-4 px PSF (SDSS) looks point-like, and the network, seeing it in a 128-px cutout whose
    edges are too far away to say where the centre is, may call it a star; it is still the
    target the cutout was made for (sep, which does not classify, fits it too).  The chosen
    detection's class is reported (``mask_central_class``) so that such fits can be selected.
    """
    if len(inst) == 0:
        return -1
    h, w = shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    rows = sorted({int(np.floor(cy)), int(np.ceil(cy))})
    cols = sorted({int(np.floor(cx)), int(np.ceil(cx))})
    covers = inst.masks[:, rows][:, :, cols].any(axis=(1, 2))
    order = np.argsort(-inst.scores, kind="stable")
    for k in order:
        if inst.labels[k] == CENTRAL and covers[k]:
            return int(k)
    for k in order:
        if inst.labels[k] == CENTRAL:
            r, c = np.nonzero(inst.masks[k])
            if np.hypot(r.mean() - cy, c.mean() - cx) <= max_distance * min(h, w):
                return int(k)
    for cls in (GALAXY, STAR):
        for k in order:
            if inst.labels[k] == cls and covers[k]:
                return int(k)
    return -1


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (Na, Nb) of boolean masks a (Na, H, W) and b (Nb, H, W)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    a = a.reshape(len(a), -1).astype(np.float32)
    b = b.reshape(len(b), -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return inter / np.maximum(union, 1.0)


def average_precision(preds: list[tuple[np.ndarray, np.ndarray]], truths: list[np.ndarray],
                      iou_thresh: float = 0.5) -> float:
    """Class-agnostic mask AP at one IoU threshold, COCO's 101-point interpolation.

    preds : per image (scores (N,), masks (N, H, W)); truths : per image masks (M, H, W).
    Each truth matches at most one prediction (highest score first, greedy, IoU >= iou_thresh).
    NaN when there is no truth at all.
    """
    records, n_truth = [], 0
    for (scores, masks), gt in zip(preds, truths):
        n_truth += len(gt)
        iou = mask_iou(masks, gt)
        used = np.zeros(len(gt), bool)
        for k in np.argsort(-np.asarray(scores), kind="stable"):
            hit = False
            if len(gt):
                cand = np.where(~used, iou[k], -1.0)
                j = int(np.argmax(cand))
                if cand[j] >= iou_thresh:
                    used[j], hit = True, True
            records.append((float(scores[k]), hit))
    if n_truth == 0:
        return float("nan")
    if not records:
        return 0.0
    records.sort(key=lambda r: -r[0])
    tp = np.cumsum([r[1] for r in records])
    fp = np.cumsum([not r[1] for r in records])
    recall = tp / n_truth
    precision = tp / np.maximum(tp + fp, 1)
    # precision envelope, sampled at 101 recall points (as COCO)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    points = np.linspace(0, 1, 101)
    idx = np.searchsorted(recall, points, side="left")
    return float(np.mean([envelope[i] if i < len(envelope) else 0.0 for i in idx]))
