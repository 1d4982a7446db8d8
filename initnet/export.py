"""A trained initializer as a model-zoo entry: safetensors weights + a self-describing entry.

Everything inference needs is in the entry (architecture and builder arguments, input
preparation, output coordinates and their standardisation), so a file works on its own.
"""

from __future__ import annotations

from pathlib import Path

import torch

from galmoss_auto import __version__

from .encoding import COORDS, SCALE, SHIFT, VALID
from .inputs import N_CHANNELS, N_PROFILE, N_SCALARS

__all__ = ["BUILDER", "entry_for", "export", "reference_input"]

BUILDER = "galmoss_auto.initnet.resnet:build_initnet"


def _trained_for(survey: str, bands, crop: int) -> dict:
    """Cutout sizes (the crop up to 8x it) and the preset's pixel scale and PSF ranges
    (:func:`galmoss_auto.models.resolve.training_range`) of a built-in preset ``survey``."""
    from galmoss_auto.data_scripts.surveys import load_survey
    from galmoss_auto.models.resolve import training_range
    return {"size": [crop, 8 * crop], **training_range(load_survey(survey), bands)}


def entry_for(module, *, survey: str, bands, training: dict, evaluation: dict,
              version: str = "1", name: str | None = None, trained_for: dict | None = None) -> dict:
    """The registry entry (contract keys) of a trained InitNetModule."""
    hp = module.hparams
    bands = [bands] if isinstance(bands, str) else list(bands)
    kwargs = dict(module.arch_kwargs)
    kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}
    arch = kwargs.get("arch", "compact")
    return {
        "name": name or f"initnet-{survey}-{arch}-v{version}",
        "stage": "initnet", "survey": survey, "bands": bands, "version": str(version),
        "architecture": {"builder": BUILDER, "kwargs": kwargs},
        "input": {"normalisation": "crop around the detected centre; channels asinh(image/sigma)/3, "
                  "10 image/F_ref, mask; scalars ln psf_fwhm_px, psf_e1, psf_e2, log10 pixel_scale, "
                  "log10 snr_ref, masked_fraction (galmoss_auto.initnet.inputs)",
                  "crop": int(hp.crop), "aperture": float(hp.aperture),
                  "search_radius": float(hp.search_radius), "channels": N_CHANNELS,
                  "scalars": N_SCALARS + (N_PROFILE if hp.get("profile", False) else 0),
                  "residual": bool(hp.get("residual", False)), "profile": bool(hp.get("profile", False))},
        "output": {"coords": list(COORDS), "shift": "baseline_coords (residual)" if hp.get("residual", False)
                   else list(SHIFT), "scale": list(SCALE),
                   "transforms": "coord = z * scale + shift; sigma = exp(log_sigma) * scale; "
                   "x = crop_origin + crop/2 + dx + 1, mag = mag_ref + dmag, r_e = 10^log_re, "
                   "n = 10^log_n, pa = atan2(s2, c2) / 2 (galmoss_auto.initnet.encoding)",
                   "valid": dict(VALID)},
        "trained_for": {"size": [int(hp.crop), 8 * int(hp.crop)], **trained_for} if trained_for
        else _trained_for(survey, bands, int(hp.crop)),
        "training": {"galmoss_auto_version": __version__, "loss": {"lam": hp.lam, "param_weight": hp.param_weight,
                     "likelihood": hp.likelihood,
                     "mean_loss": hp.get("mean_loss", "nll")}, **training},
        "evaluation": dict(evaluation), "urls": [], "licence": "BSD-3-Clause",
    }


def reference_input(module, seed: int = 0) -> torch.Tensor:
    """A fixed packed input (2, C+1, crop, crop) for the zoo's load check."""
    g = torch.Generator().manual_seed(seed)
    crop = int(module.hparams.crop)
    x = torch.randn(2, N_CHANNELS, crop, crop, generator=g)
    s = torch.randn(2, module.net.n_scalars, generator=g)
    return module.net.pack(x, s)


def export(module, zoo_dir, *, survey: str, bands, training: dict, evaluation: dict,
           version: str = "1", name: str | None = None, dtype=torch.float16,
           trained_for: dict | None = None) -> Path:
    """Write the module's network into ``zoo_dir`` (:func:`galmoss_auto.models.registry.write_zoo_entry`),
    weights stored as ``dtype`` (float16 by default; None keeps float32), with a reference
    input/output pair.  Returns the checkpoint path."""
    from galmoss_auto.models.registry import write_zoo_entry

    training = dict(training)
    trained_for = trained_for or training.pop("trained_for", None)
    entry = entry_for(module, survey=survey, bands=bands, training=training, evaluation=evaluation,
                      version=version, name=name, trained_for=trained_for)
    state = {k: v.detach().cpu() for k, v in module.net.state_dict().items()}
    return write_zoo_entry(zoo_dir, entry, state, dtype=dtype, reference_input=reference_input(module))
