"""``--init initnet``: starting values from the trained network, a batch at a time.

:class:`InitNetInitializer` is a *batch* initializer (``batched = True``): the pipeline hands it
a chunk of cutouts (masks applied) in the main process and it returns one
:class:`~galmoss_auto.initnet.base.InitResult` per cutout, in order:

* ``params``: x, y (1-based), mag, r_e (px, major axis), n, q, pa (deg), catalog conventions;
* ``columns``: ``init_method`` ("initnet", or "sep" where it fell back), the predicted 1-sigma
  uncertainties ``init_sersic_<p>_err`` (catalog units; NaN after a fallback), ``init_snr``
  (S/N of the reference flux the magnitude is predicted against);
* a prediction outside the physical ranges of :data:`galmoss_auto.initnet.encoding.VALID`
  (or one that could not be computed) falls back to sep for that galaxy, with
  ``Flag.INIT_FALLBACK``; the others are unaffected.

Registered as ``initnet`` (``get_initializer("initnet", checkpoint=PATH)``, or with
``survey=``/``band=`` (and ``zoo=``/``weights=``) to pick a checkpoint from the model zoo).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from galmoss_auto.fitting.flags import Flag

from .base import PARAMS, InitResult, register_initializer
from .encoding import SCALE, catalog_errors, to_catalog, unstandardise, valid_mask
from .inputs import prepare_inputs, stack_cutouts

__all__ = ["run_network", "InitNetInitializer", "make_initnet"]

log = logging.getLogger(__name__)


@torch.no_grad()
def run_network(net: torch.nn.Module, inputs, residual: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(coordinates (B, 8), their 1-sigma uncertainties (B, 8)) in physical units; ``residual``:
    the network predicts corrections to ``inputs.baseline`` (see :mod:`.encoding`)."""
    net.eval()
    mean, log_sigma = net(inputs.x, inputs.scalars)
    mean, log_sigma = mean.float(), log_sigma.float()
    scale = torch.tensor(SCALE, device=mean.device)
    return unstandardise(mean, inputs.baseline if residual else None), torch.exp(log_sigma) * scale


def decode(coords: torch.Tensor, sigma: torch.Tensor, inputs) -> tuple[dict, dict, np.ndarray]:
    """(catalog values {p: (B,) array}, errors {p: (B,) array}, valid (B,) bool) of a batch."""
    crop = inputs.x.shape[-1]
    ok = valid_mask(coords, crop).cpu().numpy()
    values = {k: v.cpu().numpy() for k, v in to_catalog(coords, inputs.origin, inputs.centre,
                                                         inputs.mag_ref).items()}
    errors = {k: v.cpu().numpy() for k, v in catalog_errors(coords, sigma).items()}
    return values, errors, ok


class InitNetInitializer:
    """The learned initializer (see the module docstring).

    checkpoint : path of a safetensors checkpoint (its embedded entry describes the network and
        its input preparation); or None to resolve one with ``survey``/``band``/``zoo``/``weights``
        (:func:`galmoss_auto.models.resolve_checkpoint`).
    sha256 : expected hash of ``checkpoint`` (refused on mismatch).
    batch_size : cutouts per network call.
    detect : sep settings for the fallback (:class:`~galmoss_auto.automask.detect.DetectConfig`).
    """

    name = "initnet"
    batched = True

    def __init__(self, checkpoint=None, *, sha256: str | None = None, survey: str | None = None,
                 band: str | None = None, zoo=None, weights=None, batch_size: int = 512, detect=None):
        from galmoss_auto.models.build import build_model
        from galmoss_auto.models.checkpoint import load_checkpoint

        if checkpoint is None:
            from galmoss_auto.models.resolve import resolve_checkpoint
            found = resolve_checkpoint("initnet", survey, band, zoo=zoo, weights=weights)
            if found is None:
                raise ValueError(f"no initnet checkpoint for survey {survey!r} band {band!r} "
                                 "(train one with `galmoss-auto train`, or give checkpoint=PATH)")
            checkpoint, sha256 = found.path, found.sha256
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        state, entry = load_checkpoint(checkpoint, sha256)
        if entry.get("stage") != "initnet":
            raise ValueError(f"{checkpoint}: a {entry.get('stage')!r} checkpoint, not an initnet one")
        self.checkpoint, self.entry = str(checkpoint), entry
        self.net = build_model(entry, state).float().eval()
        inp = entry.get("input", {})
        self.crop = int(inp.get("crop", 64))
        self.aperture = float(inp.get("aperture", 16.0))
        self.search_radius = float(inp.get("search_radius", 6.0))
        self.residual = bool(inp.get("residual", False))
        self.profile = bool(inp.get("profile", False))
        self.batch_size = int(batch_size)
        self.detect = detect
        self._sep = None
        self._on = torch.device("cpu")

    @classmethod
    def from_module(cls, module, batch_size: int = 512, detect=None) -> "InitNetInitializer":
        """An initializer around a trained :class:`~galmoss_auto.initnet.lightning.InitNetModule`
        (no file; for evaluation right after training)."""
        self = cls.__new__(cls)
        hp = module.hparams
        self.checkpoint, self.entry = "", {}
        self.net = module.net.float().eval()
        self.crop, self.aperture, self.search_radius = int(hp.crop), float(hp.aperture), float(hp.search_radius)
        self.residual = bool(hp.get("residual", False))
        self.profile = bool(hp.get("profile", False))
        self.batch_size, self.detect, self._sep = int(batch_size), detect, None
        self._on = next(self.net.parameters()).device
        return self

    @property
    def sep(self):
        if self._sep is None:
            from .sep_init import SepInitializer
            self._sep = SepInitializer(self.detect)
        return self._sep

    def __call__(self, cutout, detection=None) -> InitResult:
        return self.init_batch([cutout], torch.device("cpu"), [detection])[0]

    def predict(self, cutouts, device) -> tuple[dict, dict, np.ndarray, np.ndarray]:
        """Raw batch prediction: (values, errors, valid, snr) arrays over ``cutouts``."""
        device = torch.device(device)
        if self._on != device:
            self.net.to(device)
            self._on = device
        vals, errs, oks, snrs = [], [], [], []
        for start in range(0, len(cutouts), self.batch_size):
            chunk = cutouts[start:start + self.batch_size]
            s = stack_cutouts(chunk, device)
            inputs = prepare_inputs(s["image"], s["sigma"], s["mask"], s["psf"], s["zeropoint"],
                                    s["pixel_scale"], crop=self.crop, aperture=self.aperture,
                                    search_radius=self.search_radius, shapes=s["shapes"],
                                    profile=self.profile, oversampling=s["oversampling"],
                                    psf_includes_pixel=s["psf_includes_pixel"])
            coords, sigma = run_network(self.net, inputs, self.residual)
            v, e, ok = decode(coords, sigma, inputs)
            vals.append(v)
            errs.append(e)
            oks.append(ok)
            snrs.append(inputs.snr.cpu().numpy())
        cat = lambda parts: {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return cat(vals), cat(errs), np.concatenate(oks), np.concatenate(snrs)

    def init_batch(self, cutouts, device, detections=None) -> list[InitResult]:
        """One InitResult per cutout (see the module docstring)."""
        cutouts = list(cutouts)
        if not cutouts:
            return []
        detections = list(detections) if detections is not None else [None] * len(cutouts)
        try:
            values, errors, ok, snr = self.predict(cutouts, device)
        except (RuntimeError, ValueError) as exc:
            if len(cutouts) == 1:
                log.warning("initnet failed on %s: %s", cutouts[0].id, exc)
                return [self._fallback(cutouts[0], detections[0], f"initnet failed: {exc}")]
            # isolate the galaxy that breaks the batch; the others keep their predictions
            half = len(cutouts) // 2
            return (self.init_batch(cutouts[:half], device, detections[:half])
                    + self.init_batch(cutouts[half:], device, detections[half:]))
        out = []
        for i, c in enumerate(cutouts):
            if not ok[i]:
                out.append(self._fallback(c, detections[i], "initnet prediction outside the physical ranges"))
                continue
            params = {p: float(values[p][i]) for p in PARAMS}
            columns = {"init_method": "initnet", "init_snr": float(snr[i])}
            columns |= {f"init_sersic_{p}_err": float(errors[p][i]) for p in PARAMS}
            out.append(InitResult(params, 0, columns))
        return out

    def _fallback(self, cutout, detection, why: str) -> InitResult:
        base = self.sep(cutout, detection)
        columns = dict(base.columns)
        columns |= {"init_method": "sep", "init_snr": math.nan, "init_message": why}
        columns |= {f"init_sersic_{p}_err": math.nan for p in PARAMS}
        return InitResult(base.params, base.flags | int(Flag.INIT_FALLBACK), columns)


def make_initnet(**options) -> InitNetInitializer:
    """Factory registered as ``initnet``: ``make_initnet(checkpoint=PATH, **opts)``."""
    return InitNetInitializer(**options)


register_initializer("initnet", make_initnet)
