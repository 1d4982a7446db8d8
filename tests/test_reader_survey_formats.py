"""Cutouts as the survey pipelines write them: the LSST / HSC (afw) layout, an empty primary HDU
then IMAGE, MASK (a bitmask whose header names its planes) and VARIANCE, with the zero-point as
FLUXMAG0; and images whose flux unit (BUNIT nJy, nanomaggy) fixes the zero-point."""

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galmoss_auto.fitting.cutout import CutoutError, read_cutout, read_record
from galmoss_auto.fitting.headers import bad_pixels
from galmoss_auto.fitting.flags import Flag

SIZE = 48
#: The afw planes as the HSC pipeline numbers them (the header says so; any numbering works).
PLANES = {"BAD": 0, "SAT": 1, "INTRP": 2, "CR": 3, "EDGE": 4, "DETECTED": 5, "DETECTED_NEGATIVE": 6,
          "SUSPECT": 7, "NO_DATA": 8, "BRIGHT_OBJECT": 9, "CLIPPED": 10, "SENSOR_EDGE": 13}


def _afw_file(path, flux=2000.0, fluxmag0=10 ** (0.4 * 27.0), seed=0):
    """An HSC-like cutout of an exponential disc (r_e 4 px, zero-point 27 via FLUXMAG0):
    DETECTED on every pixel of the galaxy, CLIPPED and BRIGHT_OBJECT on part of it, a BAD
    column, a row of NO_DATA and a saturated, interpolated pixel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((SIZE, SIZE), dtype=float)
    r = np.hypot(xx - 23.5, yy - 23.5)
    h = 4.0 / 1.678
    img = flux * np.exp(-r / h) / (2 * np.pi * h * h) + rng.normal(0, 0.5, (SIZE, SIZE))
    mask = np.zeros((SIZE, SIZE), np.int32)
    mask[r < 14] |= 1 << PLANES["DETECTED"]
    mask[r < 6] |= 1 << PLANES["CLIPPED"]
    mask[:, 20:30] |= 1 << PLANES["BRIGHT_OBJECT"]
    mask[:, 3] |= 1 << PLANES["BAD"]
    img[:, 3] = 1e4                                  # garbage under the BAD column
    mask[45, :] |= 1 << PLANES["NO_DATA"]
    img[45, :] = 0.0
    mask[10, 40] |= (1 << PLANES["SAT"]) | (1 << PLANES["INTRP"])
    img[10, 40] = 5e3
    primary = fits.PrimaryHDU()
    primary.header["FLUXMAG0"] = fluxmag0
    mhdr = fits.Header()
    for name, bit in PLANES.items():
        mhdr[f"HIERARCH MP_{name}"] = bit
    fits.HDUList([primary, fits.ImageHDU(img.astype(np.float32), name="IMAGE"),
                  fits.ImageHDU(mask, header=mhdr, name="MASK"),
                  fits.ImageHDU(np.full((SIZE, SIZE), 0.25, np.float32), name="VARIANCE")]
                 ).writeto(path)
    return mask


def test_bad_pixels_reads_only_the_bad_planes_of_a_named_bitmask():
    hdr = {f"MP_{k}": v for k, v in PLANES.items()}
    values = np.array([0, 1 << 5, 1 << 10, 1 << 0, (1 << 5) | (1 << 1), 1 << 8, 1 << 4, 1 << 13])
    assert bad_pixels(values, hdr).tolist() == [False, False, False, True, True, True, True, False]
    # without the plane names, nonzero = bad (GALFIT, Imfit)
    assert bad_pixels(values, {}).tolist() == [False] + [True] * 7


def test_afw_cutout_keeps_the_detected_galaxy_and_masks_bad_planes(tmp_path):
    path = tmp_path / "hsc.fits"
    bits = _afw_file(path)
    c = read_cutout(str(path))
    assert c.meta["sources"]["mask"] == "extension" and c.meta["sources"]["sigma"] == "extension"
    assert c.zeropoint == pytest.approx(27.0, abs=1e-9) and c.meta["sources"]["zeropoint"] == "header"
    assert np.allclose(c.sigma, 0.5)
    detected = (bits & (1 << PLANES["DETECTED"])) != 0
    assert not c.mask[detected & (bits & (1 << PLANES["BAD"]) == 0)].any()   # the galaxy is fitted
    assert c.mask[:, 3].all() and c.mask[45, :].all() and c.mask[10, 40]
    assert c.mask.sum() == 2 * SIZE - 1 + 1
    # the same mask given explicitly as that HDU, or as a file of its own, reads the same
    for given in (f"{path}[MASK]", f"{path}[2]"):
        assert np.array_equal(read_cutout(str(path), mask=given).mask, c.mask)


def test_unit_and_fluxmag0_zeropoints(tmp_path):
    img = np.random.default_rng(1).normal(0, 1, (SIZE, SIZE)).astype(np.float32)
    img[20:28, 20:28] += 50.0
    cases = {"njy": ({"BUNIT": "nJy"}, 31.4), "nmgy": ({"BUNIT": "nanomaggy"}, 22.5),
             "ujy": ({"BUNIT": "uJy"}, 23.9), "f0": ({"FLUXMAG0": 1e10}, 25.0),
             # an explicit zero-point keyword wins over what the unit implies
             "both": ({"BUNIT": "nJy", "MAGZP": 30.0}, 30.0),
             # JWST / Spitzer surface brightness: 10^6 Jy x the pixel's solid angle per unit
             "mjysr": ({"BUNIT": "MJy/sr", "PIXSCALE": 0.03},
                       -2.5 * math.log10(1e6 * (0.03 / 206264.806) ** 2 / 3631.0)),
             # HST: PHOTFLAM per count (or electron) per second; an image in total counts adds
             # 2.5 log10 EXPTIME (WFPC2's NGC 5419: 22.558 + 8.010)
             "hst_rate": ({"BUNIT": "ELECTRONS/S", "PHOTFLAM": 1.5e-19, "PHOTPLAM": 5900.0},
                          -2.5 * math.log10(1.5e-19) - 5 * math.log10(5900.0) - 2.408),
             "hst_counts": ({"PHOTFLAM": 3.482941e-18, "PHOTPLAM": 5442.933, "EXPTIME": 1600.0},
                            30.5683)}
    for name, (keys, zp) in cases.items():
        hdu = fits.PrimaryHDU(img)
        hdu.header.update(keys)
        hdu.writeto(tmp_path / f"{name}.fits")
        c = read_record({"id": name, "image": str(tmp_path / f"{name}.fits")})
        assert c.zeropoint == pytest.approx(zp, abs=1e-4), name
        assert c.meta["sources"]["zeropoint"] == "header" and not c.flags & Flag.NO_ZEROPOINT
    # counts (or an unknown unit) carry no zero-point: NO_ZEROPOINT, as before; so does
    # MJy/sr without a pixel scale, and PHOTFLAM on an image in a calibrated unit
    for name, keys in (("adu", {"BUNIT": "ADU"}), ("sr", {"BUNIT": "MJy/sr"}),
                       ("flam", {"BUNIT": "erg/s/cm2/A", "PHOTFLAM": 1e-19, "PHOTPLAM": 5000.0})):
        hdu = fits.PrimaryHDU(img)
        hdu.header.update(keys)
        hdu.writeto(tmp_path / f"{name}.fits")
        assert read_record({"id": name, "image": str(tmp_path / f"{name}.fits")}).flags & Flag.NO_ZEROPOINT
    # a zero-point option or survey default still comes after the file's own
    c = read_record({"id": "njy", "image": str(tmp_path / "njy.fits"), "zeropoint": 27.0})
    assert c.zeropoint == 27.0
    hdu = fits.PrimaryHDU(img)
    hdu.header["FLUXMAG0"] = -3.0
    hdu.writeto(tmp_path / "neg.fits")
    with pytest.raises(CutoutError, match=r"neg\.fits.*FLUXMAG0"):
        read_record({"id": "neg", "image": str(tmp_path / "neg.fits")})


def test_run_fits_an_afw_cutout_with_its_own_planes(tmp_path):
    """The galaxy, DETECTED everywhere, is fitted (not masked away) to its true magnitude
    (27 - 2.5 log10 2000 = 18.747) and size, on the file's variance and FLUXMAG0."""
    from galmoss_auto.pipelines.config import RunConfig
    from galmoss_auto.pipelines.run import run
    import io
    d = tmp_path / "cutouts"
    d.mkdir()
    _afw_file(d / "hsc1.fits")
    run(RunConfig(input=str(d), out=str(tmp_path / "out"), workers=0, progress=False, mask="sep",
                  init="sep", errors="none", sky="none"), stream=io.StringIO())
    row = Table.read(tmp_path / "out" / "catalog.fits", mask_invalid=False)[0]
    assert row["zeropoint_source"] == "header" and row["sigma_source"] == "extension"
    assert not row["flags"] & (Flag.NO_CENTRAL_DETECTION | Flag.AT_BOUND | Flag.NO_ZEROPOINT)
    assert row["sersic_mag"] == pytest.approx(27.0 - 2.5 * math.log10(2000.0), abs=0.05)
    assert row["sersic_r_e"] == pytest.approx(4.0, rel=0.08)
    assert row["sersic_n"] == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize("keys, gain, source", [
    ({"GAIN": 4.5}, 4.5, "header"),                                  # e- per image unit as it stands
    ({"GAIN": 0.0, "BUNIT": "ADU"}, None, "none"),                   # 0 = unknown
    ({"BUNIT": "ELECTRONS"}, 1.0, "header"),
    ({"BUNIT": "ELECTRONS/S", "EXPTIME": 600.0, "CCDGAIN": 1.5}, 600.0, "header"),  # HST drizzled
    ({"ATODGAIN": 7.0, "EXPTIME": 1600.0}, 7.0, "header"),           # WFPC2 in counts (DN)
    ({"BUNIT": "COUNTS/S", "ATODGAIN": 2.0, "EXPTIME": 100.0}, 200.0, "header"),
    ({"BUNIT": "nJy", "CCDGAIN": 2.0}, None, "none"),                # a detector gain is not per nJy
    ({"BUNIT": "ELECTRONS/S"}, None, "none"),                        # per second, no exposure time
])
def test_gain_from_the_header(tmp_path, keys, gain, source):
    hdu = fits.PrimaryHDU(np.zeros((SIZE, SIZE), np.float32))
    hdu.header.update(keys)
    hdu.writeto(tmp_path / "g.fits")
    c = read_cutout(str(tmp_path / "g.fits"))
    assert c.meta.get("gain") == (None if gain is None else pytest.approx(gain))
    assert c.meta["sources"]["gain"] == source
    # a gain given for the cutout wins over the header; a default (option, preset) does not
    assert read_cutout(str(tmp_path / "g.fits"), gain=3.0).meta["gain"] == 3.0
    d = read_cutout(str(tmp_path / "g.fits"), defaults={"gain": (9.0, "option")})
    assert d.meta["gain"] == (9.0 if gain is None else pytest.approx(gain))


def test_header_gain_puts_the_poisson_term_in_the_estimated_sigma(tmp_path):
    """A bright galaxy in counts with its gain in the header: the estimated sigma grows over
    the galaxy as sqrt(sky_rms² + signal / gain), which is the noise the image has there
    (without the gain, the galaxy's Poisson noise would be counted as misfit)."""
    from galmoss_auto.fitting.noise import complete_noise
    rng = np.random.default_rng(5)
    yy, xx = np.indices((SIZE, SIZE), dtype=float)
    gain, sky = 2.0, 200.0
    galaxy = 200000.0 * np.exp(-np.hypot(xx - 23.5, yy - 23.5) / 2.4) / (2 * np.pi * 2.4 ** 2)
    counts = rng.poisson((galaxy + sky) * gain) / gain
    hdu = fits.PrimaryHDU(counts.astype(np.float32))
    hdu.header.update(GAIN=gain, BUNIT="ADU")
    hdu.writeto(tmp_path / "raw.fits")
    c = read_cutout(str(tmp_path / "raw.fits"))
    complete_noise(c)
    sky_rms = c.meta["sky"].rms
    assert sky_rms == pytest.approx(math.sqrt(sky / gain), rel=0.1)
    expected = np.sqrt(sky_rms ** 2 + np.clip(counts - c.meta["sky"].level, 0, None) / gain)
    assert np.allclose(c.sigma, expected)
    assert c.sigma[23, 23] > 4 * sky_rms
    # the noise the image really has over the galaxy is what sigma says
    core = galaxy > 50 * sky_rms
    assert np.std(((counts - galaxy - sky) / c.sigma)[core]) == pytest.approx(1.0, abs=0.2)


def test_fpack_compressed_cutouts_in_a_directory(tmp_path):
    """Legacy Survey, DES and HSC ship fpack-compressed images (.fits.fz), SDSS bzip2-compressed
    frames (.fits.bz2): a directory of them is read like one of .fits files, with the id the
    name without both extensions."""
    from galmoss_auto.fitting.records import read_inputs
    img = np.random.default_rng(2).normal(0, 1, (SIZE, SIZE)).astype(np.float32)
    img[20:28, 20:28] += 30.0
    hdu = fits.CompImageHDU(img, compression_type="RICE_1")
    hdu.header["BUNIT"] = "nanomaggy"
    d = tmp_path / "fz"
    d.mkdir()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(d / "g1.fits.fz")
    import bz2
    plain = fits.PrimaryHDU(img)
    plain.header["BUNIT"] = "nanomaggy"
    plain.writeto(tmp_path / "g2.fits")
    (d / "g2.fits.bz2").write_bytes(bz2.compress((tmp_path / "g2.fits").read_bytes()))  # SDSS frames
    recs = read_inputs(str(d))
    assert [r["id"] for r in recs] == ["g1", "g2"]
    for rec, atol in zip(recs, (0.05, 0.0)):          # RICE quantisation only; bzip2 lossless
        c = read_record(rec)
        assert c.id == rec["id"] and c.zeropoint == 22.5
        assert np.allclose(c.image, img, atol=atol)


def _legacy_files(tmp_path):
    """A Legacy Surveys viewer cutout (g and r images, each followed by its invvar; IMAGETYP and
    BAND in each header) and its PSF file (one HDU per band)."""
    rng = np.random.default_rng(4)
    hdus = [fits.PrimaryHDU()]
    for band, ivar in (("g", 4.0), ("r", 16.0)):
        img = fits.ImageHDU(rng.normal(0, 1 / math.sqrt(ivar), (SIZE, SIZE)).astype(np.float32))
        img.header.update(IMAGETYP="image", BAND=band)
        inv = fits.ImageHDU(np.full((SIZE, SIZE), ivar, np.float32))
        inv.header.update(IMAGETYP="invvar", BAND=band)
        hdus += [img, inv]
    fits.HDUList(hdus).writeto(tmp_path / "cutout.fits")
    psf = [fits.PrimaryHDU(np.ones((9, 9), np.float32)), fits.ImageHDU(np.ones((11, 11), np.float32))]
    psf[0].header["BAND"], psf[1].header["BAND"] = "g", "r"
    fits.HDUList(psf).writeto(tmp_path / "psf.fits")


def test_legacy_cutout_pairs_invvar_and_psf_by_band(tmp_path):
    _legacy_files(tmp_path)
    c = read_cutout(f"{tmp_path / 'cutout.fits'}[3]", psf=str(tmp_path / "psf.fits"))
    assert c.meta["sources"]["sigma"] == "extension" and np.allclose(c.sigma, 0.25)   # r's invvar 16
    assert c.psf.shape == (11, 11)                                                    # r's PSF
    g = read_cutout(f"{tmp_path / 'cutout.fits'}[1]", psf=str(tmp_path / "psf.fits"))
    assert np.allclose(g.sigma, 0.5) and g.psf.shape == (9, 9)
    # several bands and no HDU named: refused, naming the bands, never the first taken silently
    with pytest.raises(CutoutError, match=r"cutout\.fits: holds images in 2 bands \(g \[1\], r \[3\]\)"):
        read_cutout(str(tmp_path / "cutout.fits"))
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.random.default_rng(0).normal(0, 1, (SIZE, SIZE)).astype(np.float32)).writeto(plain)
    with pytest.raises(CutoutError, match=r"psf\.fits: holds PSFs in 2 bands"):
        read_cutout(str(plain), psf=str(tmp_path / "psf.fits"))


def test_run_band_picks_the_hdu_of_a_multiband_file(tmp_path):
    """``run --survey legacy --band r`` on the viewer's multi-band cutouts fits their r image
    (with r's invvar and, from a multi-band PSF file, r's PSF); a band the file lacks is refused."""
    from galmoss_auto.fitting.records import read_inputs
    from galmoss_auto.pipelines.config import RunConfig
    from galmoss_auto.pipelines.run import attach_defaults
    _legacy_files(tmp_path)
    recs = read_inputs(str(tmp_path / "cutout.fits"))
    attach_defaults(recs, RunConfig(input="x", out="y", survey="legacy", band="r",
                                    psf=str(tmp_path / "psf.fits")), tmp_path / "psfs")
    assert recs[0]["defaults"]["band"] == ("r", "option")
    c = read_record(recs[0])
    assert np.allclose(c.sigma, 0.25) and c.psf.shape == (11, 11)
    with pytest.raises(CutoutError, match=r"holds images in 2 bands .*none in band z"):
        read_cutout(str(tmp_path / "cutout.fits"), defaults={"band": ("z", "option")})
