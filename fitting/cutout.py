"""One galaxy's data, as the fitter sees it, and how it is read from FITS files.

A :class:`Cutout` holds plain NumPy arrays: the image, its 1-sigma noise map, the PSF, and a
bad-pixel mask (nonzero = bad, as in GALFIT and Imfit).  Readers validate everything here, so
the fitter can trust what it gets; problems raise :class:`CutoutError`, whose message names the
file and the problem.

Noise may be given as sigma (default), weight / inverse variance, or variance; it is always
stored as sigma.  NaN/inf pixels and non-positive or non-finite sigma are not errors: those
pixels are masked and counted in :attr:`Cutout.n_bad_pixels`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Cutout", "CutoutError", "read_cutout", "read_fits_array", "normalise_psf"]


class CutoutError(ValueError):
    """A cutout's input cannot be used.  The message names the file (or id) and the problem."""


@dataclass
class Cutout:
    """One galaxy's pixels and metadata.

    Attributes
    ----------
    id : str
        Identifier written to the catalog's ``id`` column.
    image : ndarray (H, W) float
        Sky-subtracted data, in counts (any linear unit consistent with ``zeropoint``).
    sigma : ndarray (H, W) or None
        1-sigma noise per pixel, same unit as ``image``.  None means unit weights.
    psf : ndarray (h, w) or None
        PSF image, normalised to unit sum on input.  Its centre is pixel ``(h // 2, w // 2)``
        (0-based), GALFIT's convention for both odd and even sizes.  None: no convolution.
    mask : ndarray (H, W) bool
        True = bad pixel, excluded from the fit.  Includes automatically masked pixels.
    zeropoint : float
        Magnitude zero-point: ``mag = zeropoint - 2.5 log10(flux in image units)``.
    pixel_scale : float or None
        Arcsec per pixel, when known (adds ``_arcsec`` columns to the catalog).
    psf_oversampling : int
        The PSF image's pixels are this many times smaller than the image's (default 1).
    psf_includes_pixel : bool
        True (default): the PSF is an *effective* PSF measured from stars, which already
        contains the pixel response, so the model is not integrated over pixels again.  False:
        an optical/atmospheric PSF; the model is integrated over pixels.
    n_bad_pixels : int
        Pixels masked automatically because the data or sigma were unusable.
    flags : int
        Bits of :class:`galmoss_auto.fitting.flags.Flag` already known for this cutout.
    source : str
        Where the pixels came from (for messages).
    """

    id: str
    image: np.ndarray
    sigma: np.ndarray | None = None
    psf: np.ndarray | None = None
    mask: np.ndarray | None = None
    zeropoint: float = 0.0
    pixel_scale: float | None = None
    psf_oversampling: int = 1
    psf_includes_pixel: bool = True
    n_bad_pixels: int = 0
    flags: int = 0
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape

    def validate(self) -> None:
        """Check shapes and values; mask unusable pixels.  Raises :class:`CutoutError`."""
        where = self.source or f"cutout {self.id!r}"
        image = np.asarray(self.image, dtype=np.float64)
        if image.ndim != 2:
            raise CutoutError(f"{where}: image must be 2-D, got shape {image.shape}")
        if min(image.shape) < 3:
            raise CutoutError(f"{where}: image of shape {image.shape} is too small to fit")
        mask = np.zeros(image.shape, bool) if self.mask is None else np.asarray(self.mask) != 0
        if mask.shape != image.shape:
            raise CutoutError(f"{where}: mask shape {mask.shape} differs from image shape {image.shape}")
        user_mask = mask.copy()
        bad = ~np.isfinite(image)
        if self.sigma is not None:
            sigma = np.asarray(self.sigma, dtype=np.float64)
            if sigma.shape != image.shape:
                raise CutoutError(
                    f"{where}: sigma shape {sigma.shape} differs from image shape {image.shape}")
            bad |= ~np.isfinite(sigma) | (sigma <= 0)
            self.sigma = np.where(bad, 1.0, sigma)
        mask |= bad
        self.n_bad_pixels = int(np.count_nonzero(bad & ~user_mask))
        if np.all(mask):
            raise CutoutError(f"{where}: no valid pixel (all masked, NaN, or with sigma <= 0)")
        self.image = np.where(bad, 0.0, image)
        self.mask = mask
        if self.psf is not None:
            self.psf = normalise_psf(self.psf, where)
            if int(self.psf_oversampling) < 1:
                raise CutoutError(f"{where}: psf_oversampling must be a positive integer, "
                                  f"got {self.psf_oversampling}")
            self.psf_oversampling = int(self.psf_oversampling)
        if not np.isfinite(self.zeropoint):
            raise CutoutError(f"{where}: zeropoint must be finite, got {self.zeropoint}")
        if self.pixel_scale is not None and not (self.pixel_scale > 0):
            raise CutoutError(f"{where}: pixel_scale must be > 0, got {self.pixel_scale}")


def normalise_psf(psf, where: str = "psf") -> np.ndarray:
    """Return the PSF as float64 with unit sum (GALFIT's rule), or raise :class:`CutoutError`."""
    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim != 2:
        raise CutoutError(f"{where}: PSF must be 2-D, got shape {psf.shape}")
    if not np.all(np.isfinite(psf)):
        raise CutoutError(f"{where}: PSF contains NaN or inf")
    total = psf.sum()
    if not total > 0:
        raise CutoutError(f"{where}: PSF sums to {total:g}; it must have a positive sum")
    return psf / total


def read_fits_array(path, hdu: int | str | None = None, what: str = "image") -> tuple[np.ndarray, dict]:
    """Read a 2-D array and its header from a FITS file.

    ``hdu`` selects the HDU by index or name; by default the first HDU with 2-D data.  Also
    accepts ``"file.fits[2]"`` / ``"file.fits[SCI]"`` syntax.  Errors name the file.
    """
    from astropy.io import fits

    path = str(path)
    if hdu is None and path.endswith("]") and "[" in path:
        path, _, ext = path[:-1].rpartition("[")
        hdu = int(ext) if ext.lstrip("-").isdigit() else ext
    if not Path(path).is_file():
        raise CutoutError(f"{path}: {what} file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False) as hdul:
                if hdu is None:
                    candidates = [h for h in hdul if h.data is not None and np.ndim(h.data) >= 2]
                    if not candidates:
                        raise CutoutError(f"{path}: no 2-D {what} data in any HDU")
                    chosen = candidates[0]
                else:
                    chosen = hdul[hdu]
                data = chosen.data
                header = dict(chosen.header)
                if data is None:
                    raise CutoutError(f"{path}: HDU {hdu!r} holds no data")
                data = np.asarray(data, dtype=np.float64)
    except CutoutError:
        raise
    except KeyError:
        raise CutoutError(f"{path}: no HDU {hdu!r}") from None
    except Exception as exc:  # astropy raises many types for damaged files
        raise CutoutError(f"{path}: cannot read {what} as FITS ({type(exc).__name__}: {exc})") from None
    data = np.squeeze(data)
    if data.ndim != 2:
        raise CutoutError(f"{path}: {what} must be 2-D, got shape {data.shape}")
    return data, header


def read_cutout(image, *, id: str | None = None, sigma=None, weight=None, variance=None,
                psf=None, mask=None, zeropoint: float | None = None, pixel_scale: float | None = None,
                psf_oversampling: int = 1, psf_includes_pixel: bool = True,
                gain: float | None = None) -> Cutout:
    """Read one cutout from FITS files (paths, optionally with ``[hdu]``) or arrays.

    Give at most one of ``sigma`` (1-sigma), ``weight`` (inverse variance) or ``variance``.
    ``zeropoint`` defaults to the header's ``MAGZP``/``ZP``/``MAGZERO`` or 0;
    ``pixel_scale`` to ``PIXSCALE``.  ``gain`` is accepted for symmetry with the pipeline's
    manifests and stored in ``meta``.
    """
    if sum(x is not None for x in (sigma, weight, variance)) > 1:
        raise CutoutError(f"{image}: give only one of sigma, weight and variance")

    def load(value, what):
        if value is None:
            return None, {}
        if isinstance(value, (str, Path)):
            return read_fits_array(value, what=what)
        return np.asarray(value, dtype=np.float64), {}

    data, header = load(image, "image")
    source = str(image) if isinstance(image, (str, Path)) else (id or "array")
    if id is None:
        id = Path(str(image)).stem if isinstance(image, (str, Path)) else "0"
    noise, _ = load(sigma, "sigma")
    if weight is not None:
        w, _ = load(weight, "weight")
        with np.errstate(divide="ignore", invalid="ignore"):
            noise = np.where(w > 0, 1.0 / np.sqrt(np.abs(w)), np.nan)
    if variance is not None:
        v, _ = load(variance, "variance")
        with np.errstate(invalid="ignore"):
            noise = np.where(v > 0, np.sqrt(np.abs(v)), np.nan)
    psf_data, _ = load(psf, "psf")
    mask_data, _ = load(mask, "mask")
    if zeropoint is None:
        zeropoint = next((float(header[k]) for k in ("MAGZP", "ZP", "MAGZERO", "ZEROPT") if k in header), 0.0)
    if pixel_scale is None and "PIXSCALE" in header:
        pixel_scale = float(header["PIXSCALE"])
    noise_source = next((v for v in (sigma, weight, variance) if v is not None), None)
    for what, arr, path in (("sigma", noise, noise_source), ("mask", mask_data, mask)):
        path = path if isinstance(path, (str, Path)) else source
        if arr is not None and arr.shape != data.shape:
            raise CutoutError(f"{path}: {what} shape {arr.shape} differs from image shape {data.shape}"
                              + (f" ({source})" if path != source else ""))
    psf_where = str(psf) if isinstance(psf, (str, Path)) else source
    if psf_data is not None:
        psf_data = normalise_psf(psf_data, psf_where)
    return Cutout(id=str(id), image=data, sigma=noise, psf=psf_data, mask=mask_data,
                  zeropoint=float(zeropoint), pixel_scale=pixel_scale,
                  psf_oversampling=psf_oversampling, psf_includes_pixel=psf_includes_pixel,
                  source=source, meta={"gain": gain} if gain is not None else {})
