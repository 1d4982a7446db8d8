"""The settings of one ``galmoss-auto run``, validated in one place.

:class:`RunConfig` mirrors the command line; ``RunConfig.from_args`` builds it from argparse.
Settings that change results (:data:`RESULT_KEYS`) are stored in the output directory and must
match when a run is resumed.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

import numpy as np

__all__ = ["RunConfig", "RESULT_KEYS", "RESULT_KEY_ABSENT", "SKY_MODES", "survey_defaults", "parse_weights"]

#: Settings whose change would make a resumed run's shards disagree with each other.
#: (The input itself is checked by the hash of its records, not by its path: the same manifest
#: given by another path resumes, an edited one is refused.)
RESULT_KEYS = ("mask", "init", "sky", "survey", "band", "psf", "zeropoint", "pixel_scale",
               "gain", "saturation", "method", "errors", "detect_thresh", "dilate", "zoo",
               "weights", "strict", "world_size", "residual_search")
#: What a result setting added after a run was written meant there: such a run resumes when
#: the setting is given the old behaviour (a run from before the residual search had none).
RESULT_KEY_ABSENT = {"residual_search": False, "model_hash": None}
SKY_MODES = ("flat", "tilted", "subtract", "none")


@dataclass
class RunConfig:
    """Run settings.

    input : manifest, directory or glob of FITS cutouts.
    out : output directory.
    mask : masker: ``auto`` (default: the learned masker when a checkpoint for the survey and
        band resolves, else ``sep``), ``sep``, ``none``, ``maskrcnn`` or another registered name.
    init : initializer: ``auto`` (default: ``initnet`` when a checkpoint resolves, else
        ``sep``), ``sep``, ``initnet``, another registered name, or a catalog path.
    sky : ``flat`` (default: a constant sky fitted with the galaxy, started from the measured
        background; ``sky_sky``/``sky_sky_err`` columns), ``tilted`` (sky plus gradients
        ``sky_dsky_dx``, ``sky_dsky_dy``), ``subtract`` (the measured background removed before
        the fit) or ``none`` (the image is taken as sky-subtracted; a measured background more
        than 5 sky RMS from zero is flagged SKY_NOT_MODELLED).
    survey, band : preset giving pixel scale, zero-point and default PSF (both or neither).
    psf : PSF file for every galaxy that has none.  zeropoint (mag), pixel_scale (arcsec/px,
        > 0), gain (e-/image unit, > 0), saturation (image units): defaults for galaxies whose
        row and file lack them (a cutout's own extensions and header come first).
    zoo : a model-zoo folder searched first for checkpoints.  weights : checkpoint choices,
        each ``NAME``, ``FILE`` or ``STAGE=NAME|FILE`` (stage ``automask``/``mask`` or
        ``initnet``/``init``); a bare one applies to every stage it fits.
    strict : refuse (use sep instead, flagged WEIGHTS_MISMATCH) a checkpoint trained for
        another pixel scale / PSF range than a cutout's; without it the checkpoint is used with
        a warning and WEIGHTS_MISMATCH.
    rank, world_size : this process's share of the work (0 <= rank < world_size): rank r fits
        the r-th contiguous block of the input, writes shards named ``part-r<rank>-NNNNN`` under
        its own lock, and leaves the final merge to the launcher
        (:func:`galmoss_auto.pipelines.run.merge_run`) unless world_size is 1.  With several
        ranks only rank 0 honours ``overwrite``, and existing shards are not an error without
        ``resume`` (the ranks write side by side); the launcher decides both before it starts
        them.
    method : ``lm`` or ``adam``.  errors : ``covariance``, ``bootstrap`` or ``none``.
    device : torch device (None: CUDA when present, else CPU).
    batch_size : galaxies per fitter batch (None: the fitter's default).
    chunk_size : galaxies per shard (>= 1; None: 128 on the CPU, 2048 on a GPU, whose batched
        fitter needs thousands at once).  workers : DataLoader processes (>= 0; default: one per
        core but one, at most 16).
    resume : continue an interrupted run.  overwrite : discard a previous run's results.
    panels : write PNG panels (data/model/residual) for the first ``panels`` galaxies (>= 0).
    blocks : write a FITS image block (data, model, residual, mask) per galaxy.
    save_masks : write the masks as FITS.  progress : show the progress bar.
    detect_thresh : sep detection threshold in sigma (> 0).  dilate : contaminant growth (px).
    residual_search : after the fit, look in each galaxy's residual for one source the masks
        and the fitted neighbours missed, fit it as an extra Sérsic, and keep it where chi²
        drops by more than 25 (:func:`galmoss_auto.fitting.neighbours.fit_with_neighbours`,
        ``search``); such neighbours have ``origin`` "residual" in neighbours.fits.
    model : a model file (YAML/TOML description or GALFIT feedme) to fit instead of one Sérsic
        (:func:`galmoss_auto.pipelines.run.read_run_model`; its content, not its path, must
        match when a run is resumed).
    """

    input: str
    out: str
    mask: str = "auto"
    init: str = "auto"
    sky: str = "flat"
    survey: str | None = None
    band: str | None = None
    psf: str | None = None
    zeropoint: float | None = None
    pixel_scale: float | None = None
    gain: float | None = None
    saturation: float | None = None
    method: str = "lm"
    errors: str = "covariance"
    device: str | None = None
    batch_size: int | None = None
    chunk_size: int | None = None
    workers: int = -1
    resume: bool = False
    overwrite: bool = False
    panels: int = 0
    blocks: bool = False
    save_masks: bool = True
    progress: bool = True
    detect_thresh: float = 1.5
    dilate: int = 2
    zoo: str | None = None
    weights: tuple = ()
    strict: bool = False
    rank: int = 0
    world_size: int = 1
    residual_search: bool = True
    model: str | None = None

    def __post_init__(self):
        if self.workers < 0:
            # Leave one core to the fitter; workers do I/O and sep.
            self.workers = max(0, min(16, (os.cpu_count() or 1) - 1))
        if self.method not in ("lm", "adam"):
            raise ValueError(f"method must be 'lm' or 'adam', got {self.method!r}")
        if self.errors not in ("covariance", "bootstrap", "none"):
            raise ValueError(f"errors must be 'covariance', 'bootstrap' or 'none', got {self.errors!r}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.panels < 0:
            raise ValueError(f"panels must be >= 0, got {self.panels}")
        if (self.survey is None) != (self.band is None):
            raise ValueError("give --survey and --band together")
        if self.pixel_scale is not None and not self.pixel_scale > 0:
            raise ValueError(f"pixel_scale must be > 0 arcsec/px, got {self.pixel_scale}")
        if self.gain is not None and not self.gain > 0:
            raise ValueError(f"gain must be > 0 e-/unit, got {self.gain}")
        if not self.detect_thresh > 0:
            raise ValueError(f"detect_thresh must be > 0 sigma, got {self.detect_thresh}")
        if self.dilate < 0:
            raise ValueError(f"dilate must be >= 0 px, got {self.dilate}")
        if self.sky not in SKY_MODES:
            raise ValueError(f"sky must be one of {', '.join(SKY_MODES)}, got {self.sky!r}")
        if self.saturation is not None and not np.isfinite(self.saturation):
            raise ValueError(f"saturation must be finite, got {self.saturation}")
        if self.zeropoint is not None and not np.isfinite(self.zeropoint):
            raise ValueError(f"zeropoint must be finite, got {self.zeropoint}")
        if self.pixel_scale is not None and not np.isfinite(self.pixel_scale):
            raise ValueError(f"pixel_scale must be finite, got {self.pixel_scale}")
        if int(self.world_size) < 1 or not 0 <= int(self.rank) < int(self.world_size):
            raise ValueError(f"need 0 <= rank < world_size, got rank {self.rank}, "
                             f"world_size {self.world_size}")
        self.weights = tuple(self.weights or ())
        parse_weights(self.weights)
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other")

    @classmethod
    def from_args(cls, args) -> "RunConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)

    def result_settings(self) -> dict:
        return {k: (list(v) if isinstance(v := getattr(self, k), tuple) else v) for k in RESULT_KEYS}


_STAGE_ALIASES = {"automask": "automask", "mask": "automask", "initnet": "initnet",
                  "init": "initnet"}


def parse_weights(weights) -> dict:
    """``--weights`` values -> {stage: choice} plus ``"*"`` for a bare choice (any stage).

    Each value is ``NAME``, ``FILE`` or ``STAGE=NAME|FILE`` with STAGE one of automask, mask,
    initnet, init.  Raises ``ValueError`` for an unknown stage or a stage given twice."""
    out = {}
    for w in weights or ():
        w = str(w)
        stage, sep, choice = w.partition("=")
        if sep and stage.lower() in _STAGE_ALIASES:
            key = _STAGE_ALIASES[stage.lower()]
        elif sep and not os.path.exists(w):
            raise ValueError(f"--weights {w!r}: unknown stage {stage!r}; use automask=... or "
                             "initnet=...")
        else:
            key, choice = "*", w
        if key in out:
            raise ValueError(f"--weights: two choices for {key if key != '*' else 'every stage'}")
        out[key] = choice
    return out


def survey_defaults(survey: str | None, band: str | None, psf_dir) -> dict:
    """``zeropoint``, ``pixel_scale``, ``gain`` (with ``gain_zeropoint``, the zero-point of the
    unit it is per) and ``psf`` (a FITS file written into ``psf_dir``) from the data_scripts
    survey preset ``survey``/``band``; {} without a survey."""
    if survey is None:
        return {}
    try:
        from galmoss_auto.data_scripts import surveys
    except ImportError as exc:
        raise ValueError(f"--survey needs galmoss_auto.data_scripts.surveys, which failed to "
                         f"import: {exc}") from None
    return surveys_to_defaults(surveys, survey, band, psf_dir)


def moffat_psf(fwhm_px: float, beta: float, size: int, oversample: int = 5) -> "np.ndarray":
    """A circular Moffat PSF image (``size`` x ``size``, odd, centred on the middle pixel),
    integrated over pixels by ``oversample``-fold sub-sampling, normalised to unit sum.
    ``fwhm_px`` > 0 in pixels, ``beta`` > 1."""
    import numpy as np
    if not fwhm_px > 0:
        raise ValueError(f"PSF FWHM must be > 0 px, got {fwhm_px}")
    if not beta > 1:
        raise ValueError(f"Moffat beta must be > 1, got {beta}")
    alpha = fwhm_px / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    sub = (np.arange(size * oversample) + 0.5) / oversample - size / 2.0
    r2 = sub[:, None] ** 2 + sub[None, :] ** 2
    img = (1.0 + r2 / alpha ** 2) ** (-beta)
    img = img.reshape(size, oversample, size, oversample).sum(axis=(1, 3))
    return img / img.sum()


def surveys_to_defaults(surveys, survey: str, band: str, psf_dir) -> dict:
    """Adapter from the data_scripts preset to run defaults (see :func:`survey_defaults`):
    the preset's zero-point, pixel scale and (effective) gain, and its median PSF drawn as a
    Moffat (``psf_beta``; a Kolmogorov preset uses beta = 4.765, its Moffat limit)."""
    from pathlib import Path

    from astropy.io import fits

    preset = surveys.load_survey(survey)
    b = preset.band(band)
    beta = preset.psf_beta if preset.psf_model == "moffat" else 4.765
    psf = moffat_psf(b.psf_fwhm / preset.pixel_scale, beta, preset.psf_size)
    psf_dir = Path(psf_dir)
    psf_dir.mkdir(parents=True, exist_ok=True)
    path = psf_dir / f"psf_{preset.name}_{band}.fits"
    fits.PrimaryHDU(psf).writeto(path, overwrite=True)
    # the gain is per image unit of the preset's zero-point: the reader converts it when the
    # image's zero-point comes from elsewhere (other units)
    return {"zeropoint": float(preset.zeropoint), "pixel_scale": float(preset.pixel_scale),
            "gain": float(b.gain), "gain_zeropoint": float(preset.zeropoint), "psf": str(path)}
