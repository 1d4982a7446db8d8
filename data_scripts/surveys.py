"""Survey presets: the facts about a survey's images that a simulation needs.

A preset is a small TOML file (``data_scripts/surveys/<name>.toml``, or any path) with
survey-wide keys and one ``[bands.<band>]`` table per filter; see ``sdss.toml`` for a commented
example and README_section.md for the key list.  Units:

* ``pixel_scale`` arcsec/px; ``zeropoint`` AB mag of one image unit (mag = zp - 2.5 log10 flux);
* ``psf_fwhm`` median seeing FWHM in arcsec, ``psf_fwhm_scatter`` its log-normal scatter (ln);
* ``sky`` dark-sky surface brightness in mag/arcsec^2; ``gain`` electrons per image unit
  (an effective gain for coadds); ``read_noise`` electrons r.m.s. per pixel;
* ``depth`` the survey's quoted point-source depth in mag (documentation and sanity check), of
  the kind named by ``depth_kind`` ("5sigma" or e.g. "95% completeness").
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

__all__ = ["Band", "Survey", "SurveyError", "load_survey", "list_surveys"]

PSF_MODELS = ("moffat", "kolmogorov")


class SurveyError(ValueError):
    """A preset is missing, unreadable or inconsistent; the message names the file."""


@dataclass(frozen=True)
class Band:
    """One filter of a survey.  See the module docstring for units."""

    name: str
    psf_fwhm: float
    sky: float
    gain: float
    read_noise: float
    depth: float
    colour: float  # m_band - m_ref of a typical galaxy (population offset), mag

    def sky_level(self, zeropoint: float, pixel_scale: float) -> float:
        """Sky per pixel in image units (subtracted from the images, but sets the noise)."""
        return 10.0 ** (-0.4 * (self.sky - zeropoint)) * pixel_scale ** 2

    def sky_sigma(self, zeropoint: float, pixel_scale: float) -> float:
        """1-sigma background noise per pixel in image units: sqrt(sky e- + read_noise^2) / gain."""
        electrons = self.sky_level(zeropoint, pixel_scale) * self.gain
        return math.sqrt(electrons + self.read_noise ** 2) / self.gain


@dataclass(frozen=True)
class Survey:
    """A survey preset.  ``bands`` maps band name -> :class:`Band`."""

    name: str
    description: str
    pixel_scale: float
    zeropoint: float
    image_unit: str
    psf_model: str
    psf_beta: float
    psf_fwhm_scatter: float
    psf_ellipticity: float
    psf_size: int
    bands: dict = field(default_factory=dict)
    population: dict = field(default_factory=dict)
    depth_kind: str = "5sigma"
    source: str = ""

    def band(self, name: str) -> Band:
        if name not in self.bands:
            raise SurveyError(f"{self.source}: survey {self.name!r} has no band {name!r} "
                              f"(bands: {', '.join(self.bands)})")
        return self.bands[name]

    def derived_depth(self, band: str, nsigma: float = 5.0) -> float:
        """Point-source depth (mag) implied by the sky noise and the median PSF.

        Uses the effective number of pixels of a Moffat (or, for Kolmogorov, a beta=4.765
        Moffat, the turbulence limit of Trujillo et al. 2001): Neff = pi a^2 (2b-1)/(b-1)^2.
        Compared with ``Band.depth`` by the tests to catch inconsistent presets.
        """
        b = self.band(band)
        beta = self.psf_beta if self.psf_model == "moffat" else 4.765
        fwhm_px = b.psf_fwhm / self.pixel_scale
        alpha = fwhm_px / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
        neff = math.pi * alpha ** 2 * (2 * beta - 1) / (beta - 1) ** 2
        flux = nsigma * b.sky_sigma(self.zeropoint, self.pixel_scale) * math.sqrt(neff)
        return self.zeropoint - 2.5 * math.log10(flux)


_REQUIRED = ("name", "pixel_scale", "zeropoint", "psf_model", "psf_fwhm_scatter",
             "psf_ellipticity", "psf_size", "bands")
_BAND_REQUIRED = ("psf_fwhm", "sky", "gain", "read_noise", "depth")


def _positive(where: str, key: str, value, allow_zero: bool = False) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise SurveyError(f"{where}: {key} must be a number, got {value!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise SurveyError(f"{where}: {key} must be {bound}, got {value}")
    return value


def list_surveys() -> list[str]:
    """Names of the built-in presets."""
    folder = resources.files("galmoss_auto.data_scripts") / "surveys"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_survey(name_or_path: str | Path) -> Survey:
    """Load a built-in preset by name (``"sdss"``, ``"legacy"``, ``"hsc"``, ``"lsst"``) or a TOML path."""
    text_path = Path(str(name_or_path))
    if text_path.suffix == ".toml" or text_path.is_file():
        if not text_path.is_file():
            raise SurveyError(f"{text_path}: survey preset file not found")
        raw = text_path.read_bytes()
        where = str(text_path)
    else:
        res = resources.files("galmoss_auto.data_scripts") / "surveys" / f"{name_or_path}.toml"
        if not res.is_file():
            raise SurveyError(f"unknown survey {name_or_path!r}; built-in presets: "
                              f"{', '.join(list_surveys())}, or give a path to a .toml file")
        raw = res.read_bytes()
        where = f"surveys/{name_or_path}.toml"
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SurveyError(f"{where}: not valid TOML ({exc})") from None
    return survey_from_dict(data, where)


def survey_from_dict(data: dict, where: str = "preset") -> Survey:
    """Validate a parsed preset (see :func:`load_survey`)."""
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise SurveyError(f"{where}: missing key(s) {', '.join(missing)}")
    model = str(data["psf_model"]).lower()
    if model not in PSF_MODELS:
        raise SurveyError(f"{where}: psf_model must be one of {PSF_MODELS}, got {model!r}")
    beta = float(data.get("psf_beta", 3.5))
    if model == "moffat" and not beta > 1.1:
        raise SurveyError(f"{where}: psf_beta must be > 1.1 for a Moffat PSF, got {beta}")
    size = int(data["psf_size"])
    if size < 5 or size % 2 == 0:
        raise SurveyError(f"{where}: psf_size must be odd and >= 5, got {size}")
    ell = _positive(where, "psf_ellipticity", data["psf_ellipticity"], allow_zero=True)
    if ell > 0.3:
        raise SurveyError(f"{where}: psf_ellipticity must be <= 0.3 (r.m.s. shear), got {ell}")
    pop = dict(data.get("population", {}))
    colours = pop.pop("colour", {})
    bands = {}
    if not data["bands"]:
        raise SurveyError(f"{where}: no [bands.*] table")
    for bname, b in data["bands"].items():
        bwhere = f"{where} [bands.{bname}]"
        miss = [k for k in _BAND_REQUIRED if k not in b]
        if miss:
            raise SurveyError(f"{bwhere}: missing key(s) {', '.join(miss)}")
        bands[bname] = Band(
            name=bname,
            psf_fwhm=_positive(bwhere, "psf_fwhm", b["psf_fwhm"]),
            sky=float(b["sky"]),
            gain=_positive(bwhere, "gain", b["gain"]),
            read_noise=_positive(bwhere, "read_noise", b["read_noise"], allow_zero=True),
            depth=float(b["depth"]),
            colour=float(colours.get(bname, 0.0)),
        )
    return Survey(
        name=str(data["name"]), description=str(data.get("description", "")),
        pixel_scale=_positive(where, "pixel_scale", data["pixel_scale"]),
        zeropoint=float(data["zeropoint"]), image_unit=str(data.get("image_unit", "")),
        psf_model=model, psf_beta=beta,
        psf_fwhm_scatter=_positive(where, "psf_fwhm_scatter", data["psf_fwhm_scatter"], allow_zero=True),
        psf_ellipticity=ell, psf_size=size, bands=bands, population=pop,
        depth_kind=str(data.get("depth_kind", "5sigma")), source=where)
