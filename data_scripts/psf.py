"""The PSF of one simulated cutout: a GalSim model drawn from the survey's seeing distribution,
or one of the user's PSF images.

All GalSim profiles here are in *pixel* units (image scale 1).  The PSF profile returned by
:func:`draw_psf` is the atmospheric/optical PSF (no pixel); the image written beside each
cutout is the *effective* PSF, i.e. that profile convolved with the pixel (GalSim
``method='auto'``), odd-sized, unit sum, centred on pixel ``(h // 2, w // 2)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import galsim
import numpy as np

__all__ = ["PsfImage", "read_psf_file", "draw_psf", "effective_psf_image", "GSPARAMS", "BRIGHT_GSPARAMS",
           "BRIGHT_RATIO"]

#: Shared GalSim accuracy settings.  maximum_fft_size is raised so that a large n ~ 6 central
#: galaxy never aborts; the default folding/maxk thresholds (GalSim's accuracy) are kept.
GSPARAMS = galsim.GSParams(maximum_fft_size=16384)
#: For very bright objects (flux > BRIGHT_RATIO x sky sigma): the FFT's k-space cut at GalSim's
#: default maxk_threshold (1e-3) leaves ringing along the rows and columns through the object at
#: ~1e-7 of its flux, visible far above the noise for a bright star; 1e-7 suppresses it.
BRIGHT_GSPARAMS = galsim.GSParams(maximum_fft_size=16384, maxk_threshold=1e-7)
BRIGHT_RATIO = 1e4


@dataclass(frozen=True)
class PsfImage:
    """A user-supplied PSF image.

    array: 2-D, any normalisation; pixel_scale: arcsec per pixel *of this image* (it may be
    finer than the survey's); includes_pixel: True if it is an effective PSF measured from
    stars (its own pixel response is then deconvolved before resampling).
    """

    array: np.ndarray
    pixel_scale: float
    includes_pixel: bool = True
    source: str = ""


def read_psf_file(path, pixel_scale: float | None = None, includes_pixel: bool = True) -> PsfImage:
    """Read a PSF FITS file (``.fits`` or ``.fits.gz``).  ``pixel_scale`` (arcsec/px) defaults to the
    header's ``PIXSCALE``; a missing scale is an error naming the file."""
    from galmoss_auto.fitting.cutout import read_fits_array, normalise_psf

    data, header = read_fits_array(path, what="psf")
    if pixel_scale is None:
        if "PIXSCALE" not in header:
            raise ValueError(f"{path}: PSF file has no PIXSCALE header; give its pixel scale (arcsec/px)")
        pixel_scale = float(header["PIXSCALE"])
    if not pixel_scale > 0:
        raise ValueError(f"{path}: PSF pixel scale must be > 0 arcsec/px, got {pixel_scale}")
    psf, note = normalise_psf(data, str(path))
    if note:  # a flat background under the PSF, subtracted: the simulations would carry it
        warnings.warn(note, stacklevel=2)
    return PsfImage(psf, float(pixel_scale), includes_pixel, str(Path(path)))


def _model_psf(survey, band, rng: np.random.Generator) -> tuple[galsim.GSObject, dict]:
    b = survey.band(band)
    # Seeing is log-normal around the median (its scatter from the preset).
    fwhm = b.psf_fwhm * float(np.exp(rng.normal(0.0, survey.psf_fwhm_scatter)))
    fwhm_px = fwhm / survey.pixel_scale
    if survey.psf_model == "moffat":
        prof = galsim.Moffat(beta=survey.psf_beta, fwhm=fwhm_px, gsparams=GSPARAMS)
    else:
        prof = galsim.Kolmogorov(fwhm=fwhm_px, gsparams=GSPARAMS)
    e1, e2 = (float(v) for v in np.clip(rng.normal(0.0, survey.psf_ellipticity, 2), -0.3, 0.3))
    # GalSim's shear() keeps the area, so the FWHM above is the circularised one.
    prof = prof.shear(g1=e1, g2=e2)
    return prof, {"psf_fwhm": fwhm, "psf_e1": e1, "psf_e2": e2, "psf_source": survey.psf_model}


def _image_psf(survey, images, rng: np.random.Generator) -> tuple[galsim.GSObject, dict]:
    pick = images[int(rng.integers(len(images)))]
    scale = pick.pixel_scale / survey.pixel_scale  # file pixel in survey pixels
    prof = galsim.InterpolatedImage(galsim.Image(np.ascontiguousarray(pick.array), scale=scale),
                                    gsparams=GSPARAMS, flux=1.0)
    if pick.includes_pixel:
        # The file's own pixel response is removed so that drawing with method='auto' at the
        # survey's pixel does not count a pixel twice.
        prof = galsim.Convolve(prof, galsim.Deconvolve(galsim.Pixel(scale, gsparams=GSPARAMS)))
    eff = prof.drawImage(nx=survey.psf_size, ny=survey.psf_size, scale=1.0, method="auto")
    fwhm = eff.calculateFWHM() * survey.pixel_scale
    return prof, {"psf_fwhm": float(fwhm), "psf_e1": 0.0, "psf_e2": 0.0, "psf_source": Path(pick.source).name}


def draw_psf(survey, band, rng: np.random.Generator, images=None) -> tuple[galsim.GSObject, dict]:
    """One PSF for one cutout: (GalSim profile in pixel units, info dict with ``psf_fwhm`` in arcsec,
    ``psf_e1``, ``psf_e2`` and ``psf_source``).  ``images``: optional list of :class:`PsfImage`;
    one is picked at random for each cutout (psf_e1/e2 are then 0: the image's own shape is kept)."""
    if images:
        return _image_psf(survey, images, rng)
    return _model_psf(survey, band, rng)


def effective_psf_image(profile: galsim.GSObject, size: int) -> np.ndarray:
    """The effective PSF (profile x pixel) on an odd ``size`` x ``size`` grid, unit sum, centred on
    pixel (size // 2, size // 2)."""
    if size % 2 == 0:
        raise ValueError(f"PSF image size must be odd, got {size}")
    img = profile.drawImage(nx=size, ny=size, scale=1.0, method="auto").array.astype(np.float64)
    return img / img.sum()
