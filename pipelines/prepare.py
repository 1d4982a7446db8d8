"""Everything the pipeline does to one galaxy before the fit.

In DataLoader workers (:class:`Preparer`, per cutout): the noise step (the sky measured, kept
in ``cutout.meta["sky"]``; sigma estimated where no sigma map was given; with ``--sky
subtract`` the measured level removed from the image), then the per-cutout masker and
initializer (sep).  In the main process (:class:`BatchStages`, per chunk): the batched
(learned) masker and initializer, on the torch device, after the workers' steps.

A stage that fails on one galaxy never stops it: a failing masker leaves the user's mask
(``MASK_FAILED``), a failing initializer leaves a generic start (``INIT_FALLBACK``); a failing
batched stage falls back to sep for its chunk with the same flags; the reason goes to the
``message`` column.  Only an unusable cutout (e.g. no sky measurable) becomes a
:class:`~galmoss_auto.fitting.dataset.CutoutFailure`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from galmoss_auto.automask.base import MaskResult, initializer_view, is_batched
from galmoss_auto.fitting.cutout import Cutout, CutoutError
from galmoss_auto.fitting.dataset import CutoutFailure
from galmoss_auto.fitting.flags import Flag
from galmoss_auto.fitting.noise import complete_noise, estimate_sigma, sky_left_in
from galmoss_auto.initnet.base import InitResult, fallback_guess

__all__ = ["Prepared", "Preparer", "BatchStages", "estimate_sigma"]


@dataclass
class Prepared:
    """A galaxy ready to fit: the cutout (mask = input mask OR masker's), the masker's own
    mask, the initial guess, pipeline flags, ``columns`` for the catalog, stage timings (s),
    the neighbours to fit with it (and their pixels, hidden from the initializer), and the
    stages still to run in the main process (``pending``: ``"mask"`` and/or ``"init"``)."""

    cutout: Cutout
    auto_mask: np.ndarray
    init: InitResult | None
    flags: int = 0
    columns: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    neighbours: list = field(default_factory=list)
    neighbour_pixels: np.ndarray | None = None
    pending: set = field(default_factory=set)
    messages: list = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.cutout.id

    def finish(self) -> "Prepared":
        self.columns["message"] = "; ".join(m for m in self.messages if m)
        return self


def _name(stage) -> str:
    return str(getattr(stage, "name", type(stage).__name__))


def apply_mask(g: Prepared, res: MaskResult, name: str) -> None:
    """OR a masker's result into ``g`` (its cutout's mask, flags, columns, neighbours)."""
    cut = g.cutout
    auto = np.asarray(res.mask, bool) & ~cut.mask
    g.auto_mask = auto
    cut.mask = cut.mask | auto
    g.flags |= int(res.flags)
    # the noise step's sky columns stand (with --sky subtract the masker sees a zero level)
    g.columns |= {k: v for k, v in res.columns.items() if k not in ("sky_level", "sky_rms")}
    g.columns["mask_method"] = res.method or name
    g.neighbours = list(res.neighbours or [])
    g.neighbour_pixels = res.neighbour_pixels if g.neighbours else None


def init_view(g: Prepared) -> Cutout:
    """``g``'s cutout as its initializer sees it (the modelled neighbours hidden)."""
    return initializer_view(g.cutout, g.neighbour_pixels)


def run_masker(g: Prepared, masker):
    """Per-cutout masker on ``g``; returns its sep detection (or None).  Never raises."""
    try:
        res = masker(g.cutout)
    except Exception as exc:  # a masker bug or sep failure costs this galaxy its auto-mask only
        g.flags |= int(Flag.MASK_FAILED)
        g.columns["mask_method"] = "none"
        g.messages.append(f"masker {_name(masker)} failed: {type(exc).__name__}: {exc}")
        return None
    apply_mask(g, res, _name(masker))
    return res.detection


def run_initializer(g: Prepared, initializer, detection=None) -> None:
    """Per-cutout initializer on ``g`` (generic start + INIT_FALLBACK if it raises)."""
    try:
        init = initializer(init_view(g), detection)
    except Exception as exc:  # same rule for the initializer: fall back, flag, say why
        init = InitResult(fallback_guess(g.cutout), int(Flag.INIT_FALLBACK),
                          {"init_method": "fallback"})
        g.messages.append(f"initializer {_name(initializer)} failed: {type(exc).__name__}: {exc}")
    set_init(g, init, _name(initializer))


def set_init(g: Prepared, init: InitResult, name: str) -> None:
    g.init = init
    g.flags |= int(init.flags)
    g.columns |= dict(init.columns)
    g.columns.setdefault("init_method", name)


class Preparer:
    """Picklable per-galaxy transform run in the workers: ``preparer(cutout) -> Prepared |
    CutoutFailure``.  ``masker`` / ``initializer``: the run's stages; a batched one is left for
    :class:`BatchStages` (``Prepared.pending``), and a per-cutout initializer then waits too,
    since it must see the batched masker's mask.  ``sky``: the run's ``--sky`` mode."""

    def __init__(self, masker, initializer, sky: str = "flat"):
        self.masker = masker
        self.initializer = initializer
        self.sky = sky

    def __call__(self, cutout: Cutout):
        timings = dict(cutout.meta.get("timings", {}))
        t0 = time.perf_counter()
        try:
            columns = complete_noise(cutout)
        except (CutoutError, ValueError) as exc:
            return CutoutFailure(cutout.id, f"{cutout.source}: cannot measure the noise: {exc}"
                                 if not str(exc).startswith(cutout.source) else str(exc),
                                 cutout.source, timings)
        if self.sky == "subtract":
            sky = cutout.meta["sky"]
            cutout.image = np.where(cutout.mask, 0.0, cutout.image - sky.level)
            cutout.meta["sky_subtracted"] = float(sky.level)
            cutout.meta["sky"] = replace(sky, level=0.0)
        timings["sigma"] = time.perf_counter() - t0
        flags = int(cutout.flags)
        if cutout.n_bad_pixels:
            flags |= int(Flag.AUTO_MASKED_PIXELS)
        src = cutout.meta.get("sources", {})
        columns |= {"psf_source": src.get("psf", "none"), "sigma_source": src.get("sigma", "none"),
                    "gain_source": src.get("gain", "none"), "zeropoint_source": src.get("zeropoint", "none"),
                    "pixel_scale_source": src.get("pixel_scale", "none"),
                    "n_saturated": int(cutout.meta.get("n_saturated", 0))}
        g = Prepared(cutout=cutout, auto_mask=np.zeros(cutout.image.shape, bool), init=None,
                     flags=flags, columns=columns, timings=timings)
        sky = cutout.meta["sky"]
        if self.sky == "none" and sky_left_in(sky):
            # --sky none trusts the image to be sky-subtracted; flag it when it visibly is not
            g.flags |= int(Flag.SKY_NOT_MODELLED)
            g.messages.append(f"--sky none but the measured background is "
                              f"{sky.level / sky.rms:.1f} sky RMS from 0 (use --sky flat)")
        if cutout.meta.get("psf_note"):  # what was done to the PSF (resampled, PSFEx position)
            g.messages.append(cutout.meta["psf_note"])
        if cutout.flags & Flag.NO_ZEROPOINT:
            g.messages.append("no zero-point in the row, header, options or survey: magnitudes "
                              "use zero-point 0")
        if cutout.flags & Flag.NO_PSF:
            g.messages.append("no PSF in the row, file, companions, options or survey: the model is "
                              "not convolved, so r_e and n include the seeing (give --psf or --survey)")
        t0 = time.perf_counter()
        detection = None
        if is_batched(self.masker):
            g.pending.add("mask")
        else:
            detection = run_masker(g, self.masker)
        timings["mask"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if is_batched(self.masker) or is_batched(self.initializer):
            g.pending.add("init")
        else:
            run_initializer(g, self.initializer, detection)
        timings["init"] = time.perf_counter() - t0
        # The detection holds full-size arrays; dropping it keeps worker->main transfers small.
        return g.finish()


def _run_batched(items: list, batch_call, apply, fallback, flag: Flag, what: str, view=None) -> None:
    """A learned stage's batch call on ``items``' cutouts (``view(item)``, default its cutout),
    each result applied to its item; if the call fails (or returns the wrong number of results)
    the whole chunk falls back to sep (``fallback(item)``), flagged ``flag``, with the reason in
    its messages."""
    try:
        results = batch_call([view(g) if view else g.cutout for g in items])
        if len(results) != len(items):
            raise RuntimeError(f"returned {len(results)} results for {len(items)} cutouts")
        for g, res in zip(items, results):
            apply(g, res)
    except Exception as exc:
        for g in items:
            g.flags |= int(flag)
            g.messages.append(f"{what} failed, sep used: {type(exc).__name__}: {exc}")
            fallback(g)


class BatchStages:
    """The main-process part of preparation, per chunk: the batched masker, then the
    initializer for every galaxy still waiting for one.

    ``masker``, ``initializer``: the run's stages.  ``sep_masker``, ``sep_initializer``: the
    fall-backs.  ``checks``: {"mask"|"init": callable(cutout) -> list of problems} (a
    checkpoint's training range against the cutout); ``strict``: a cutout with problems uses
    sep (WEIGHTS_MISMATCH plus a message), else the learned stage runs and the row is flagged
    WEIGHTS_MISMATCH.  ``warn``: callable(message), told once per kind of problem.
    """

    def __init__(self, masker, initializer, sep_masker, sep_initializer, checks=None,
                 strict: bool = False, warn=None):
        self.masker, self.initializer = masker, initializer
        self.sep_masker, self.sep_initializer = sep_masker, sep_initializer
        self.checks = checks or {}
        self.strict = strict
        self.warn = warn or (lambda msg: None)
        self._warned = set()

    def _gate(self, stage: str, items: list[Prepared]) -> list[Prepared]:
        """Items the learned ``stage`` may run on (the others are flagged / diverted)."""
        check = self.checks.get(stage)
        if check is None:
            return items
        ok = []
        for g in items:
            problems = check(g.cutout)
            if not problems:
                ok.append(g)
                continue
            g.flags |= int(Flag.WEIGHTS_MISMATCH)
            text = "; ".join(problems)
            if text not in self._warned:
                self._warned.add(text)
                self.warn(f"{stage} checkpoint: {text}"
                          + (" (refused under --strict: sep used)" if self.strict else ""))
            if self.strict:
                g.messages.append(f"{stage} checkpoint refused (--strict): {text}")
            else:
                g.messages.append(f"{stage} checkpoint outside its training range: {text}")
                ok.append(g)
        return ok

    def __call__(self, items: list, device) -> None:
        prepared = [g for g in items if isinstance(g, Prepared)]
        timings = {"mask": 0.0, "init": 0.0}
        t0 = time.perf_counter()
        want = [g for g in prepared if "mask" in g.pending]
        detections = {}
        if want:
            learned = self._gate("mask", want)
            chosen = {id(g) for g in learned}
            for g in want:
                if id(g) not in chosen:
                    detections[id(g)] = run_masker(g, self.sep_masker)
            if learned:
                name = _name(self.masker)

                def sep_mask(g):
                    detections[id(g)] = run_masker(g, self.sep_masker)
                _run_batched(learned, lambda c: self.masker.mask_batch(c, device),
                             lambda g, res: apply_mask(g, res, name), sep_mask,
                             Flag.MASK_FAILED, f"masker {name}")
            for g in want:
                g.pending.discard("mask")
        timings["mask"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        want = [g for g in prepared if "init" in g.pending]
        if want:
            if is_batched(self.initializer):
                learned = self._gate("init", want)
                chosen = {id(g) for g in learned}
                for g in want:
                    if id(g) not in chosen:
                        run_initializer(g, self.sep_initializer, detections.get(id(g)))
                if learned:
                    name = _name(self.initializer)
                    _run_batched(learned, lambda c: self.initializer.init_batch(c, device),
                                 lambda g, init: set_init(g, init, name),
                                 lambda g: run_initializer(g, self.sep_initializer,
                                                           detections.get(id(g))),
                                 Flag.INIT_FALLBACK, f"initializer {name}", view=init_view)
            else:
                for g in want:
                    run_initializer(g, self.initializer, detections.get(id(g)))
            for g in want:
                g.pending.discard("init")
        timings["init"] = time.perf_counter() - t0
        for g in prepared:
            g.finish()
        return timings
