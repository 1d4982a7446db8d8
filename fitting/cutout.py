"""One galaxy's data, as the fitter sees it, and how it is read from FITS files.

A :class:`Cutout` holds plain NumPy arrays: the image, its 1-sigma noise map, the PSF, and a
bad-pixel mask (nonzero = bad, as in GALFIT and Imfit).  Readers validate everything here, so
the fitter can trust what it gets; problems raise :class:`CutoutError`, whose message names the
file and the problem.

Noise may be given as sigma (default), weight / inverse variance, or variance; it is always
stored as sigma.  NaN/inf pixels and non-positive or non-finite sigma are not errors: those
pixels are masked and counted in :attr:`Cutout.n_bad_pixels`.

What the fit depends on is found in this order (``cutout.meta["sources"]`` says which):

1. what the caller gives (a manifest cell, a companion file, a function argument);
2. the image file itself (an image named ``file.fits[HDU]`` uses only that HDU's header):
   extensions named ``SIGMA``/``ERR``/``NOISE``/``RMS`` (sigma),
   ``WEIGHT``/``WHT``/``IVAR`` (inverse variance), ``VAR``/``VARIANCE``, ``PSF``,
   ``MASK``/``BADPIX``/``BPM`` (an LSST / HSC bitmask, whose header names its planes, by its
   bad planes only); header zero-point (:data:`ZP_KEYS`, else what ``FLUXMAG0``, ``BUNIT`` or
   HST's ``PHOTFLAM`` imply), pixel scale (:data:`SCALE_KEYS`, else the WCS CD/CDELT matrix of a
   celestial WCS), ``SATURATE`` and the gain (``GAIN``, else what ``BUNIT`` implies, else
   ``ATODGAIN``/``CCDGAIN`` for an image in counts); how headers are read:
   :mod:`galmoss_auto.fitting.headers`;
3. the command's defaults (options, feedme, survey preset);
4. nothing: the source is ``"none"`` (no PSF: no convolution, and :func:`read_record` flags
   NO_PSF; no sigma: estimated by :func:`galmoss_auto.fitting.noise.complete_noise`; no
   zero-point: 0, and :func:`read_record` flags NO_ZEROPOINT).

:func:`read_record` is the one reader of ``galmoss-auto fit`` and ``galmoss-auto run``: on top
of :func:`read_cutout` it refuses cutouts too small to fit (BAD_INPUT | TOO_FEW_PIXELS) and
empty ones, and masks saturated pixels (counted in ``meta["n_saturated"]``); :func:`read_cutout`
masks a fill value written where a stamp had no data (:mod:`galmoss_auto.fitting.fill`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .fill import fill_pixels
from .headers import bad_pixels, bands, header_gain, header_zeropoint
from .psf_pedestal import remove_psf_pedestal
from .psf_scale import match_psf_scale
from .psfex import is_psfex, psfex_image
from .records import IMAGE_RE

__all__ = ["Cutout", "CutoutError", "read_cutout", "read_record", "read_fits_array", "psf_fwhm_px",
           "normalise_psf", "MIN_SIDE", "MIN_GOOD_PIXELS", "ZP_KEYS", "SCALE_KEYS", "EXTENSIONS"]


class CutoutError(ValueError):
    """A cutout's input cannot be used.  The message names the file (or id) and the problem.
    ``flags``: the catalog bits its row gets (BAD_INPUT, plus TOO_FEW_PIXELS for a cutout too
    small to fit)."""

    def __init__(self, message: str, flags: int | None = None):
        super().__init__(message)
        from .flags import Flag
        self.flags = int(Flag.BAD_INPUT) if flags is None else int(flags)


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
            from .flags import Flag
            raise CutoutError(f"{where}: too few pixels to fit (image of shape {image.shape})",
                              int(Flag.BAD_INPUT | Flag.TOO_FEW_PIXELS))
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
            self.psf, note = normalise_psf(self.psf, where)
            if note:
                self.meta["psf_note"] = "; ".join(n for n in (self.meta.get("psf_note"), note) if n)
            factor = float(self.psf_oversampling)
            if not (factor.is_integer() and factor >= 1):   # NaN and inf are not integers
                raise CutoutError(f"{where}: psf_oversampling must be a positive integer (PSF pixels per "
                                  f"image pixel), got {self.psf_oversampling}")
            self.psf_oversampling = int(factor)
        if not np.isfinite(self.zeropoint):
            raise CutoutError(f"{where}: zeropoint must be finite, got {self.zeropoint}")
        if self.pixel_scale is not None and not (np.isfinite(self.pixel_scale) and self.pixel_scale > 0):
            raise CutoutError(f"{where}: pixel_scale must be finite and > 0 arcsec/px, "
                              f"got {self.pixel_scale}")


def psf_fwhm_px(psf: np.ndarray | None, oversampling: int = 1) -> float | None:
    """FWHM in *image* pixels of a PSF image, divided by ``oversampling`` (PSF pixels per image
    pixel): the smaller of the Gaussian-equivalent width of its second moments and the
    diameter of the circle whose area equals that of the pixels above half the peak
    (``2 sqrt(N / pi)``).  The moments are exact for a Gaussian, whose half-maximum area is
    quantised to whole pixels (3.4 px for a 3 px FWHM sampled at 1 px); a Moffat's wings
    inflate its moments, and there the half-maximum width wins.  None without a PSF or with a
    PSF that has no positive peak."""
    if psf is None:
        return None
    p = np.clip(np.asarray(psf, np.float64), 0.0, None)
    total, peak = float(p.sum()), float(p.max())
    if not peak > 0:
        return None
    half_max = 2.0 * math.sqrt(int(np.count_nonzero(p >= 0.5 * peak)) / math.pi)
    yy, xx = np.indices(p.shape)
    my, mx = (p * yy).sum() / total, (p * xx).sum() / total
    var = (p * ((yy - my) ** 2 + (xx - mx) ** 2)).sum() / total / 2.0
    width = min(2.3548 * math.sqrt(var), half_max) if var > 0 else half_max
    return float(width) / max(int(oversampling), 1)


def normalise_psf(psf, where: str = "psf") -> tuple[np.ndarray, str | None]:
    """(the PSF as float64 with unit sum, GALFIT's rule; a note when a pedestal was subtracted
    from it first, else None), or raise :class:`CutoutError`.  A flat level under the whole
    image (a star stack's background left in or over-subtracted) is not PSF light and would
    bias the magnitude by its share of the sum: :mod:`.psf_pedestal` finds and removes it."""
    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim != 2:
        raise CutoutError(f"{where}: PSF must be 2-D, got shape {psf.shape}")
    if not np.all(np.isfinite(psf)):
        raise CutoutError(f"{where}: PSF contains NaN or inf")
    total = psf.sum()
    if not total > 0:
        raise CutoutError(f"{where}: PSF sums to {total:g}; it must have a positive sum")
    psf, note = remove_psf_pedestal(psf, where)
    total = psf.sum()
    if not total > 0:
        raise CutoutError(f"{where}: PSF sums to {total:g} once its flat border level is "
                          "subtracted; it must have a positive sum")
    return psf / total, note


#: Header keywords of the magnitude zero-point, in the order they are tried.
ZP_KEYS = ("MAGZP", "MAGZPT", "ZP", "ZEROPT", "MAGZERO", "PHOTZP", "MAG_ZP", "ZPT")
#: Header keywords of the pixel scale (arcsec/px), tried before the WCS.
SCALE_KEYS = ("PIXSCALE", "PIXSCAL1", "PIXSCAL", "SECPIX", "SECPIX1", "PIXELSCL")
#: Extension names (upper case) that hold each plane beside the image.
EXTENSIONS = {"sigma": ("SIGMA", "ERR", "ERROR", "NOISE", "RMS", "SIG"),
              "weight": ("WEIGHT", "WHT", "WGT", "IVAR", "INVVAR", "WT"),
              "variance": ("VAR", "VARIANCE"),
              "psf": ("PSF",), "mask": ("MASK", "BADPIX", "BPM", "MSK")}
_IMAGE_NAMES = ("IMAGE", "SCI", "DATA")
#: The smallest cutout side (px) and number of usable pixels worth fitting a Sérsic to.
MIN_SIDE = 8
MIN_GOOD_PIXELS = 64


def _split_hdu(path: str):
    if path.endswith("]") and "[" in path:
        path, _, ext = path[:-1].rpartition("[")
        return path, int(ext) if ext.lstrip("-").isdigit() else ext
    return path, None


def _as_2d(data, where: str, what: str) -> np.ndarray:
    data = np.asarray(data, dtype=np.float64)
    while data.ndim > 2 and data.shape[0] == 1:     # degenerate leading axes (1, H, W)
        data = data[0]
    if data.ndim != 2:
        raise CutoutError(f"{where}: {what} must be 2-D, got shape {data.shape}")
    return data


def read_fits_array(path, hdu: int | str | None = None, what: str = "image") -> tuple[np.ndarray, dict]:
    """Read a 2-D array and its header from a FITS file.

    ``hdu`` selects the HDU by index or name; by default the first HDU with 2-D data.  Also
    accepts ``"file.fits[2]"`` / ``"file.fits[SCI]"`` syntax.  Errors name the file.
    """
    data, header, _ = _open_fits(path, hdu, what, extensions=False)
    return data, header


def _open_fits(path, hdu, what: str, extensions: bool, paired: bool = False, band: str | None = None):
    """(data, header, {plane: (array, "file[EXT]", header)}) of a FITS file; the planes are the
    :data:`EXTENSIONS` found in it besides the chosen HDU (only when ``extensions``), and with
    ``paired`` the inverse variance that the Legacy Surveys' cutouts pair with an image by its
    band.  A file holding one HDU per band (:func:`~galmoss_auto.fitting.headers.bands`) gives
    the HDU of ``band``, and without it raises, naming the bands: taking the first would be a
    silent choice of band."""
    from astropy.io import fits

    path = str(path)
    if hdu is None:
        path, hdu = _split_hdu(path)
    if not Path(path).is_file():
        raise CutoutError(f"{path}: {what} file not found")
    planes = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False) as hdul:
                named = {str(h.name).upper(): k for k, h in enumerate(hdul)}
                per_band, invvars = bands(hdul)
                if hdu is None:
                    plane_names = {n for names in EXTENSIONS.values() for n in names}
                    chosen = next((hdul[named[n]] for n in _IMAGE_NAMES if n in named
                                   and hdul[named[n]].data is not None), None)
                    if chosen is None:
                        candidates = [h for h in hdul if h.data is not None and np.ndim(h.data) >= 2
                                      and str(h.name).upper() not in plane_names]
                        if not candidates:
                            raise CutoutError(f"{path}: no 2-D {what} data in any HDU")
                        chosen = candidates[0]
                    if len(per_band) > 1 and band in per_band:
                        chosen = hdul[per_band[band]]
                    elif len(per_band) > 1:
                        listed = ", ".join(f"{b} [{k}]" for b, k in per_band.items())
                        things = "PSFs" if what == "psf" else f"{what}s"
                        raise CutoutError(f"{path}: holds {things} in {len(per_band)} bands ({listed})"
                                          + (f", none in band {band}" if band else "")
                                          + f"; name one, e.g. {path}[{next(iter(per_band.values()))}]")
                else:
                    chosen = hdul[hdu]
                if chosen.data is None:
                    raise CutoutError(f"{path}: HDU {hdu!r} holds no data")
                data = np.asarray(chosen.data, dtype=np.float64)
                header = dict(chosen.header)
                if chosen is not hdul[0] and hdul[0].data is None:
                    # keywords such as MAGZP often sit in an empty primary header
                    header = {**dict(hdul[0].header), **header}
                if paired:
                    k = invvars.get(str(chosen.header.get("BAND", "")).strip())
                    if str(chosen.header.get("IMAGETYP", "")).strip().lower() == "image" and k is not None \
                            and np.shape(hdul[k].data) == np.shape(chosen.data):
                        planes["weight"] = (np.asarray(hdul[k].data, np.float64), f"{path}[{k}]",
                                            dict(hdul[k].header))
                if extensions:
                    for plane, names in EXTENSIONS.items():
                        for n in names:
                            if n in named and hdul[named[n]] is not chosen and hdul[named[n]].data is not None:
                                planes[plane] = (np.asarray(hdul[named[n]].data, np.float64),
                                                 f"{path}[{n}]", dict(hdul[named[n]].header))
                                break
    except CutoutError:
        raise
    except (KeyError, IndexError):
        raise CutoutError(f"{path}: no HDU {hdu!r}") from None
    except Exception as exc:  # astropy raises many types for damaged files
        raise CutoutError(f"{path}: cannot read {what} as FITS ({type(exc).__name__}: {exc})") from None
    return _as_2d(data, path, what), header, planes


def _header_number(header: dict, keys, where: str, what: str):
    for k in keys:
        if k in header and header[k] not in (None, ""):
            try:
                value = float(header[k])
            except (TypeError, ValueError):
                raise CutoutError(f"{where}: header {k} = {header[k]!r} is not a number ({what})") from None
            return value, k
    return None, None


def _wcs_scale(header: dict) -> float | None:
    """Pixel scale (arcsec/px) from a celestial WCS: sqrt|det CD| (or of PC x CDELT)."""
    ctype = str(header.get("CTYPE1", "")).upper()
    if not ctype.startswith(("RA", "DEC", "GLON", "GLAT", "ELON", "ELAT")):
        return None
    if all(k in header for k in ("CD1_1", "CD2_2")):
        cd = [[float(header.get("CD1_1", 0)), float(header.get("CD1_2", 0))],
              [float(header.get("CD2_1", 0)), float(header.get("CD2_2", 0))]]
    elif "CDELT1" in header and "CDELT2" in header:
        pc = [[float(header.get("PC1_1", 1)), float(header.get("PC1_2", 0))],
              [float(header.get("PC2_1", 0)), float(header.get("PC2_2", 1))]]
        d1, d2 = float(header["CDELT1"]), float(header["CDELT2"])
        cd = [[pc[0][0] * d1, pc[0][1] * d1], [pc[1][0] * d2, pc[1][1] * d2]]
    else:
        return None
    det = abs(cd[0][0] * cd[1][1] - cd[0][1] * cd[1][0])
    return math.sqrt(det) * 3600.0 if det > 0 else None


def _ascii_mask(path: str, shape) -> np.ndarray:
    """GALFIT's text bad-pixel list: one ``x y`` (1-based) per line -> bool mask."""
    try:
        xy = np.loadtxt(path, comments="#", ndmin=2)
    except (OSError, ValueError) as exc:
        raise CutoutError(f"{path}: cannot read the mask as FITS or as an 'x y' list ({exc})") from None
    mask = np.zeros(shape, bool)
    if xy.size:
        if xy.shape[1] < 2:
            raise CutoutError(f"{path}: mask list needs two columns x y, got {xy.shape[1]}")
        x, y = np.rint(xy[:, 0]).astype(int) - 1, np.rint(xy[:, 1]).astype(int) - 1
        ok = (x >= 0) & (x < shape[1]) & (y >= 0) & (y < shape[0])
        mask[y[ok], x[ok]] = True
    return mask


def read_cutout(image, *, id: str | None = None, sigma=None, weight=None, variance=None,
                psf=None, mask=None, zeropoint: float | None = None, pixel_scale: float | None = None,
                psf_oversampling: int = 1, psf_includes_pixel: bool = True,
                psf_x: float | None = None, psf_y: float | None = None,
                gain: float | None = None, saturation: float | None = None,
                sources: dict | None = None, defaults: dict | None = None,
                region: tuple | None = None, use_file: bool = True) -> Cutout:
    """Read one cutout from FITS files (paths, optionally with ``[hdu]``) or arrays.

    Give at most one of ``sigma`` (1-sigma), ``weight`` (inverse variance) or ``variance``.
    What is not given comes from the image file itself when ``use_file`` (its ``SIGMA``,
    ``WEIGHT``, ``VAR``, ``PSF``, ``MASK`` extensions, unless the image is named with an explicit
    HDU such as ``file.fits[0]``, which selects that HDU alone; header zero-point :data:`ZP_KEYS`,
    ``FLUXMAG0``, ``BUNIT`` or ``PHOTFLAM`` (see the module docstring), pixel
    scale :data:`SCALE_KEYS` or WCS, ``SATURATE``), then from ``defaults`` (key -> (value,
    source); ``defaults["band"]`` picks the HDU of a file with one per band); else the
    zero-point is 0 and the pixel scale unknown.  ``sources`` (key -> source
    name) labels the given values (default ``"argument"``); the result's
    ``meta["sources"]`` says where the psf, sigma, mask, zeropoint, pixel_scale, saturation and
    gain came from (``"none"`` where nothing gave it).  ``mask`` may be GALFIT's text list of
    1-based ``x y`` bad pixels.  ``saturation`` (image units): pixels at or above it are
    masked, their count in ``meta["n_saturated"]``.  Patches of one exactly repeated value (a
    cutout service's fill where it had no data, a clipped plateau; :mod:`.fill`) are set to
    NaN and so masked (``n_bad_pixels``), their count in ``meta["n_fill"]``.  ``region`` =
    GALFIT's H) (xmin, xmax, ymin, ymax), 1-based inclusive: the cutout is that part of the
    image.  ``gain`` (e-/image unit; else the header's, else ``defaults``) is stored in
    ``meta`` for sigma estimation; a default gain that comes with
    ``defaults["gain_zeropoint"]`` (from the same source, e.g. a survey preset) is per unit of
    that zero-point and is converted to the image's own zero-point.  ``psf_x``, ``psf_y``:
    where a PSFEx ``psf`` model is evaluated (1-based pixel in the image it was built on;
    :mod:`galmoss_auto.fitting.psfex`).
    """
    sources = dict(sources or {})
    defaults = dict(defaults or {})
    if sum(x is not None for x in (sigma, weight, variance)) > 1:
        raise CutoutError(f"{image}: give only one of sigma, weight and variance")
    is_path = isinstance(image, (str, Path))
    source = str(image) if is_path else (id or "array")
    if id is None:
        id = IMAGE_RE.sub("", Path(_split_hdu(str(image))[0]).name) if is_path else "0"
    if is_path:
        # an image named as file.fits[HDU] is that HDU alone: the caller chose among the
        # file's extensions, so the others are not taken as its sigma/PSF/mask
        explicit = _split_hdu(str(image))[1] is not None
        data, header, planes = _open_fits(image, None, "image", extensions=use_file and not explicit,
                                          paired=use_file, band=(defaults.get("band") or (None,))[0])
    else:
        data, header, planes = _as_2d(image, source, "image"), {}, {}
    found = {}

    headers = {}  # what -> header of the file a plane was read from (the PSF's pixel scale)
    psfex = {}    # a PSFEx model's sampling step (image pixels) and what was done with it

    def load(value, what):
        if isinstance(value, (str, Path)):
            if what == "mask" and not IMAGE_RE.search(_split_hdu(str(value))[0]):
                return _ascii_mask(str(value), data.shape), str(value)
            try:
                arr, hdr, _ = _open_fits(value, None, what, extensions=False,
                                         band=str(header.get("BAND", "")).strip()
                                         or (defaults.get("band") or (None,))[0])
            except CutoutError:
                # no image in it: a PSFEx model is a table (looked for only now, so that the
                # usual PSF image costs one file open)
                if what != "psf" or not is_psfex(value):
                    raise
                try:
                    arr, psfex["samp"], psfex["note"] = psfex_image(value, psf_x, psf_y)
                except (ValueError, KeyError) as exc:
                    raise CutoutError(f"{value}: cannot evaluate the PSFEx model ({exc})") from None
                return arr, str(value)
            headers[what] = hdr
            return (bad_pixels(arr, hdr).astype(np.float64) if what == "mask" else arr), str(value)
        return _as_2d(value, source, what), source

    if "mask" in planes:  # an LSST / HSC bitmask is read by its bad planes only
        arr, where, hdr = planes["mask"]
        planes["mask"] = (bad_pixels(arr, hdr).astype(np.float64), where, hdr)

    # noise: argument > extension > default
    noise_kind, noise_val = next(((k, v) for k, v in (("sigma", sigma), ("weight", weight),
                                                     ("variance", variance)) if v is not None),
                                 (None, None))
    noise_src = sources.get(noise_kind, "argument") if noise_kind else None
    if noise_kind is None:
        noise_kind = next((k for k in ("sigma", "weight", "variance") if k in planes), None)
        if noise_kind is not None:
            noise_val, noise_src = planes[noise_kind][0], "extension"
            found["noise_where"] = planes[noise_kind][1]
    if noise_kind is None:
        noise_kind = next((k for k in ("sigma", "weight", "variance") if k in defaults), None)
        if noise_kind is not None:
            noise_val, noise_src = defaults[noise_kind]
    noise, noise_where = (None, None)
    if noise_val is not None:
        arr, noise_where = load(noise_val, noise_kind)
        noise_where = found.get("noise_where", noise_where)
        with np.errstate(divide="ignore", invalid="ignore"):
            if noise_kind == "weight":
                arr = np.where(arr > 0, 1.0 / np.sqrt(np.abs(arr)), np.nan)
            elif noise_kind == "variance":
                arr = np.where(arr > 0, np.sqrt(np.abs(arr)), np.nan)
        noise = arr

    def pick(key, value, plane=None):
        if value is not None:
            return value, sources.get(key, "argument"), None
        if plane and plane in planes:
            headers[plane] = planes[plane][2]
            return planes[plane][0], "extension", planes[plane][1]
        if key in defaults:
            return defaults[key][0], defaults[key][1], None
        return None, "none", None

    psf_val, psf_src, psf_where = pick("psf", psf, "psf")
    mask_val, mask_src, mask_where = pick("mask", mask, "mask")
    psf_data = mask_data = None
    if psf_val is not None:
        psf_data, where = load(psf_val, "psf")
        psf_where = psf_where or where
    if mask_val is not None:
        mask_data, where = load(mask_val, "mask")
        mask_where = mask_where or where

    implied = {"pixel_scale": lambda: _wcs_scale(header),
               "zeropoint": lambda: header_zeropoint(header, source, scale),
               "gain": lambda: header_gain(header)}

    def number(key, value, header_keys, what):
        if value is not None:
            return float(value), sources.get(key, "argument")
        if use_file and header_keys:
            v, _ = _header_number(header, header_keys, source, what)
            if v is not None:
                return v, "header"
        if use_file and key in implied:  # what the header implies without a keyword of its own
            try:
                v = implied[key]()
            except ValueError as exc:
                raise CutoutError(str(exc)) from None
            if v is not None:
                return v, "header"
        if key in defaults:
            return float(defaults[key][0]), defaults[key][1]
        return None, "none"

    scale, scale_src = number("pixel_scale", pixel_scale, SCALE_KEYS, "pixel scale")
    zp, zp_src = number("zeropoint", zeropoint, ZP_KEYS, "zero-point")
    sat, sat_src = number("saturation", saturation, ("SATURATE", "SATURATION", "SATLEVEL"),
                          "saturation level")
    gain_v, gain_src = number("gain", gain, (), "gain")
    ref = defaults.get("gain_zeropoint")
    if gain_v is not None and ref is not None and gain_src == ref[1] and zp is not None and math.isfinite(zp):
        # a preset's gain is electrons per image unit *of the preset's zero-point*; an image
        # given in another unit (another zero-point) holds 10^(0.4 (zp_preset - zp)) such
        # units per unit of its own: without this, a --survey gain on data in other units
        # turns sigma into pure (wrong) Poisson noise and nothing is detected
        gain_v *= 10.0 ** (0.4 * (float(ref[0]) - zp))
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        where = source if scale_src in ("header", "argument", "manifest") else f"{scale_src} value"
        raise CutoutError(f"{where}: pixel scale must be finite and > 0 arcsec/px, got {scale} "
                          f"(from the {scale_src})")
    if zp is not None and not math.isfinite(zp):
        raise CutoutError(f"{source}: zero-point must be finite, got {zp} (from the {zp_src})")
    for what, arr, where in (("sigma", noise, noise_where), ("mask", mask_data, mask_where)):
        if arr is not None and arr.shape != data.shape:
            raise CutoutError(f"{where}: {what} shape {arr.shape} differs from image shape {data.shape}"
                              + (f" ({source})" if where != source else ""))
    if region is not None:
        x0, x1, y0, y1 = (int(v) for v in region)
        if x0 < 1 or y0 < 1 or x1 > data.shape[1] or y1 > data.shape[0] or x1 < x0 or y1 < y0:
            raise CutoutError(f"{source}: region (H) {tuple(region)} exceeds the image "
                              f"({data.shape[1]} x {data.shape[0]} pixels)")
        cut = (slice(y0 - 1, y1), slice(x0 - 1, x1))
        data = data[cut]
        noise = None if noise is None else noise[cut]
        mask_data = None if mask_data is None else mask_data[cut]
    if noise is not None and not np.any(np.isfinite(noise) & (noise > 0)):
        raise CutoutError(f"{noise_where}: the sigma map of {source} has no valid pixel "
                          "(every value <= 0 or not finite)")
    psf_note = None
    if psf_data is not None:
        psf_data, pedestal_note = normalise_psf(psf_data, psf_where)
        if psfex:  # sampled every PSF_SAMP image pixels
            psf_data, psf_oversampling, psf_note = match_psf_scale(psf_data, psfex["samp"], 1.0,
                                                                   psf_oversampling, unit=" px")
            psf_note = "; ".join(n for n in (psfex["note"], psf_note) if n)
        else:  # a PSF file that states another pixel scale than the image's: onto its grid
            psf_scale = _header_number(headers.get("psf", {}), SCALE_KEYS, psf_where, "PSF pixel scale")[0]
            psf_scale = psf_scale if psf_scale is not None else _wcs_scale(headers.get("psf", {}))
            psf_data, psf_oversampling, psf_note = match_psf_scale(psf_data, psf_scale, scale,
                                                                   psf_oversampling)
        psf_note = "; ".join(n for n in (pedestal_note, psf_note) if n) or None
    user_mask = np.zeros(data.shape, bool) if mask_data is None else np.asarray(mask_data) != 0
    n_sat = 0
    if sat is not None:
        with np.errstate(invalid="ignore"):
            saturated = np.isfinite(data) & (data >= sat) & ~user_mask
        n_sat = int(np.count_nonzero(saturated))
        user_mask = user_mask | saturated
    # a cutout service's fill value where it had no data (fitting/fill.py): unusable, so NaN,
    # which Cutout masks and counts (n_bad_pixels, AUTO_MASKED_PIXELS); an image that is fill
    # all over is left to read_record, which calls it empty
    fill = fill_pixels(data) & ~user_mask
    n_fill = int(np.count_nonzero(fill))
    if n_fill and np.any(np.isfinite(data) & ~fill & ~user_mask):
        data = np.where(fill, np.nan, np.asarray(data, np.float64))
    else:
        n_fill = 0
    meta = {"sources": {"psf": psf_src, "sigma": noise_src or "none", "mask": mask_src,
                        "zeropoint": zp_src, "pixel_scale": scale_src, "saturation": sat_src,
                        "gain": gain_src},
            "n_saturated": n_sat, "n_fill": n_fill}
    if gain_v is not None:
        meta["gain"] = gain_v
    if psf_note:
        meta["psf_note"] = psf_note
    if sat is not None:
        meta["saturation"] = sat
    return Cutout(id=str(id), image=data, sigma=noise, psf=psf_data,
                  mask=user_mask if (mask_data is not None or n_sat) else None,
                  zeropoint=0.0 if zp is None else float(zp), pixel_scale=scale,
                  psf_oversampling=psf_oversampling, psf_includes_pixel=psf_includes_pixel,
                  source=source, meta=meta)


#: Record keys passed on to :func:`read_cutout` by :func:`read_record`.
RECORD_KEYS = ("sigma", "weight", "variance", "psf", "mask", "zeropoint", "pixel_scale", "gain",
               "saturation", "psf_oversampling", "psf_includes_pixel", "psf_x", "psf_y")


def read_record(rec: dict, region: tuple | None = None) -> Cutout:
    """One input record (see :mod:`galmoss_auto.fitting.records`) -> a :class:`Cutout` ready
    for the noise step; the one reader behind ``fit`` and ``run``.

    On top of :func:`read_cutout`: a record marked unusable (``rec["error"]``) is refused
    with its message; a cutout smaller than :data:`MIN_SIDE` px on a side or with fewer than
    :data:`MIN_GOOD_PIXELS` usable pixels raises CutoutError with BAD_INPUT | TOO_FEW_PIXELS;
    an empty cutout (every usable pixel equal) raises; no zero-point anywhere sets
    NO_ZEROPOINT (magnitudes then use 0), no PSF anywhere NO_PSF (the model is not convolved).
    """
    from .flags import Flag
    if rec.get("error"):
        raise CutoutError(str(rec["error"]))
    if rec.get("image") is None:
        raise CutoutError(f"row {rec.get('id')!r}: no image given")
    kwargs = {k: rec[k] for k in RECORD_KEYS if rec.get(k) is not None}
    cut = read_cutout(rec["image"], id=str(rec["id"]), sources=rec.get("sources"),
                      defaults=rec.get("defaults"), region=region, **kwargs)
    h, w = cut.shape
    good = cut.image[~cut.mask]
    if min(h, w) < MIN_SIDE or good.size < MIN_GOOD_PIXELS:
        raise CutoutError(f"{cut.source}: too few pixels to fit ({w} x {h}, {good.size} usable; "
                          f"at least {MIN_SIDE} px a side and {MIN_GOOD_PIXELS} usable pixels "
                          "are needed)", int(Flag.BAD_INPUT | Flag.TOO_FEW_PIXELS))
    if np.ptp(good) == 0:
        raise CutoutError(f"{cut.source}: empty cutout (every unmasked pixel equals "
                          f"{good.flat[0]:g})")
    if cut.meta["sources"]["zeropoint"] == "none":
        cut.flags = int(cut.flags) | int(Flag.NO_ZEROPOINT)
    if cut.meta["sources"]["psf"] == "none":
        cut.flags = int(cut.flags) | int(Flag.NO_PSF)
    if cut.meta.get("n_saturated"):
        cut.flags = int(cut.flags) | int(Flag.AUTO_MASKED_PIXELS)
    return cut
