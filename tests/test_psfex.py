"""PSFEx models (``.psf``) as PSFs: evaluated at the galaxy's position (manifest ``psf_x``,
``psf_y``) or at the model's reference position, their PSF_SAMP turned into an oversampling
(resampled where it is not an integer), and the models this reader cannot evaluate refused with
the file named."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galmoss_auto.fitting.cutout import CutoutError, read_cutout, read_record
from galmoss_auto.fitting.psfex import is_psfex, psfex_image

sys.path.insert(0, str(Path(__file__).parent))
from psf_helpers import gaussian_psf, moment_fwhm  # noqa: E402

SIDE = 31


def _psfex(path, samp=0.5, fwhm0=3.0, fwhm1=4.0, naxis=2):
    """A degree-1 model whose PSF (FWHM in image pixels) is fwhm0 at the reference position
    (1000, 2000) and fwhm1 one POLSCAL1 (2000 px) further along x: 1, X, Y terms."""
    g0, g1 = gaussian_psf(SIDE, fwhm0 / samp), gaussian_psf(SIDE, fwhm1 / samp)
    cube = np.stack([g0, g1 - g0, np.zeros_like(g0)]).astype(np.float32)
    col = fits.Column(name="PSF_MASK", format=f"{cube.size}E", dim=f"({SIDE},{SIDE},3)", array=cube[None])
    hdu = fits.BinTableHDU.from_columns([col])
    hdu.header.update(POLNAXIS=naxis, POLNGRP=1, POLNAME1="X_IMAGE", POLNAME2="Y_IMAGE",
                      POLGRP1=1, POLGRP2=1, POLZERO1=1000.0, POLSCAL1=2000.0, POLZERO2=2000.0,
                      POLSCAL2=4000.0, POLDEG1=1, PSFNAXIS=3, PSFAXIS1=SIDE, PSFAXIS2=SIDE,
                      PSFAXIS3=3, PSF_SAMP=samp)
    if naxis == 3:
        hdu.header.update(POLNAME3="MAG_AUTO", POLGRP3=1)
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)


def test_psfex_model_at_a_position(tmp_path):
    path = tmp_path / "field.psf"
    _psfex(path)
    assert is_psfex(path) and not is_psfex(tmp_path / "missing.psf")
    ref, samp, note = psfex_image(path)
    assert samp == 0.5 and "reference position (1000, 2000)" in note
    assert moment_fwhm(ref, 2) == pytest.approx(3.0, rel=1e-3)
    far, _, note = psfex_image(path, 3000.0, 2000.0)       # X = 1: the second PSF
    assert moment_fwhm(far, 2) == pytest.approx(4.0, rel=1e-3) and "(3000, 2000)" in note
    with pytest.raises(ValueError, match="both psf_x and psf_y"):
        psfex_image(path, 3000.0, None)


def test_reader_uses_psf_samp_and_the_record_position(tmp_path):
    img = np.random.default_rng(0).normal(0, 1, (40, 40)).astype(np.float32)
    fits.PrimaryHDU(img).writeto(tmp_path / "g.fits")
    fits.PrimaryHDU(np.ones_like(img)).writeto(tmp_path / "s.fits")
    _psfex(tmp_path / "half.psf", samp=0.5)
    _psfex(tmp_path / "odd.psf", samp=0.8)
    rec = {"id": "g", "image": str(tmp_path / "g.fits"), "psf": str(tmp_path / "half.psf"),
           "sigma": str(tmp_path / "s.fits"), "zeropoint": 25.0}
    c = read_record(dict(rec))
    assert c.psf_oversampling == 2 and moment_fwhm(c.psf, 2) == pytest.approx(3.0, rel=1e-3)
    assert "reference position" in c.meta["psf_note"]
    c = read_record(dict(rec, psf_x=3000.0, psf_y=2000.0))
    assert moment_fwhm(c.psf, 2) == pytest.approx(4.0, rel=1e-3) and "(3000, 2000)" in c.meta["psf_note"]
    # PSF_SAMP 0.8: 1.25 samples per pixel, resampled onto a grid of 2 per pixel
    c = read_record(dict(rec, psf=str(tmp_path / "odd.psf")))
    assert c.psf_oversampling == 2 and "resampled" in c.meta["psf_note"]
    assert moment_fwhm(c.psf, 2) == pytest.approx(3.0, rel=5e-3)


def test_manifest_columns_and_unsupported_models(tmp_path):
    from galmoss_auto.fitting.records import read_inputs
    fits.PrimaryHDU(np.random.default_rng(0).normal(0, 1, (40, 40)).astype(np.float32)).writeto(tmp_path / "g.fits")
    _psfex(tmp_path / "field.psf")
    Table({"id": ["g"], "image": ["g.fits"], "psf": ["field.psf"], "psf_x": [3000.0],
           "psf_y": [2000.0]}).write(tmp_path / "m.csv")
    rec = read_inputs(str(tmp_path / "m.csv"))[0]
    assert rec["psf_x"] == 3000.0 and rec["psf_y"] == 2000.0
    c = read_record(dict(rec, zeropoint=25.0))
    assert moment_fwhm(c.psf, 2) == pytest.approx(4.0, rel=1e-3)
    _psfex(tmp_path / "ctx.psf", naxis=3)
    with pytest.raises(CutoutError, match=r"ctx\.psf.*MAG_AUTO"):
        read_cutout(str(tmp_path / "g.fits"), psf=str(tmp_path / "ctx.psf"))


def test_fit_command_with_a_psfex_model_says_where_it_was_evaluated(tmp_path, capsys):
    """``galmoss-auto fit`` on a manifest whose PSF is a PSFEx model: the galaxy, convolved with
    the model's PSF at its position, is recovered, and the catalog's message says where the
    model was evaluated."""
    from galmoss_auto.pipelines.cli import main
    galsim = pytest.importorskip("galsim")
    img = galsim.Convolve(galsim.Sersic(n=1.0, half_light_radius=4.0, flux=5000.0),
                          galsim.Gaussian(fwhm=4.0)).drawImage(nx=48, ny=48, scale=1.0).array
    img = img + np.random.default_rng(1).normal(0, 0.5, img.shape)
    fits.PrimaryHDU(img.astype(np.float32)).writeto(tmp_path / "g.fits")
    fits.PrimaryHDU(np.full(img.shape, 0.5, np.float32)).writeto(tmp_path / "s.fits")
    _psfex(tmp_path / "field.psf")
    Table({"id": ["g"], "image": ["g.fits"], "sigma": ["s.fits"], "psf": ["field.psf"],
           "psf_x": [3000.0], "psf_y": [2000.0], "zeropoint": [25.0]}).write(tmp_path / "m.csv")
    assert main(["fit", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "out"),
                 "--errors", "none"]) == 0
    row = Table.read(tmp_path / "out" / "catalog.fits")[0]
    assert "PSFEx model" in row["message"] and "(3000, 2000)" in row["message"]
    assert row["sersic_r_e"] == pytest.approx(4.0, rel=0.05)
    assert row["sersic_mag"] == pytest.approx(25.0 - 2.5 * math.log10(5000.0), abs=0.03)
