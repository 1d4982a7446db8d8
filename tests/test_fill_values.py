"""Fill values (fitting/fill.py): the constant a cutout service writes where a stamp has no data
is masked by the reader, so a zero-filled strip fits like a NaN-filled one."""

import io

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galmoss_auto.fitting.cutout import CutoutError, read_cutout, read_record
from galmoss_auto.fitting.fill import fill_pixels
from galmoss_auto.fitting.flags import Flag


def _galaxy(n=48, amp=40.0, seed=0, sky=0.0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    r2 = (xx - (n - 1) / 2) ** 2 + ((yy - (n - 1) / 2) / 0.7) ** 2
    return (amp * np.exp(-np.sqrt(r2) / 3.0) + sky + rng.normal(0, 0.5, (n, n))).astype(np.float32)


def test_fill_pixels_finds_a_zeroed_strip_and_a_plateau_but_not_noise():
    img = _galaxy()
    img[:, :12] = 0.0                      # off the survey's footprint
    img[40:44, 30:38] = 655.35             # a clipped plateau (32 px)
    fill = fill_pixels(img)
    expected = np.zeros(img.shape, bool)
    expected[:, :12] = True
    expected[40:44, 30:38] = True
    assert np.array_equal(fill, expected)
    assert not fill_pixels(_galaxy()).any()                       # float noise: never equal
    rng = np.random.default_rng(3)
    counts = np.round(rng.normal(1000.0, 2.0, (128, 128)))       # raw integer counts, 2 rms
    assert not fill_pixels(counts).any()
    small = _galaxy()
    small[:4, :4] = 0.0                                            # 16 px: below FILL_MIN_PIXELS
    assert not fill_pixels(small).any()
    nan = _galaxy()
    nan[:, :12] = np.nan                                           # NaN is masked elsewhere
    assert not fill_pixels(nan).any()
    with pytest.raises(ValueError, match="min_pixels"):
        fill_pixels(img, min_pixels=1)
    with pytest.raises(ValueError, match="min_adjacent"):
        fill_pixels(img, min_adjacent=0.0)


def test_the_reader_masks_fill_and_counts_it(tmp_path):
    img = _galaxy()
    img[:, :12] = 0.0
    fits.PrimaryHDU(img).writeto(tmp_path / "edge.fits")
    cut = read_record({"id": "edge", "image": str(tmp_path / "edge.fits"), "zeropoint": 25.0})
    assert cut.meta["n_fill"] == 48 * 12 and cut.n_bad_pixels == 48 * 12
    assert cut.mask[:, :12].all() and not cut.mask[:, 12:].any()
    # a user mask over the strip already: nothing counted twice
    mask = np.zeros(img.shape, np.uint8)
    mask[:, :12] = 1
    cut = read_cutout(img, id="m", mask=mask, zeropoint=25.0)
    assert cut.meta["n_fill"] == 0 and cut.n_bad_pixels == 0
    # an image that is one value all over stays the empty cutout it is
    with pytest.raises(CutoutError, match="empty cutout"):
        read_record({"id": "z", "image": np.zeros((40, 40), np.float32), "zeropoint": 25.0})


def test_run_fits_a_zero_filled_stamp_like_a_nan_filled_one(tmp_path):
    """`run` on the same stamp with its left quarter missing, written as 0 and as NaN, with a
    sky pedestal left in (where a zero strip is a deep hole): both fits agree, and the galaxy
    alone is recovered."""
    from galmoss_auto.pipelines.config import RunConfig
    from galmoss_auto.pipelines.run import run

    d = tmp_path / "stamps"
    d.mkdir()
    base = _galaxy(sky=5.0, seed=4)
    for name, value in (("whole", None), ("zero", 0.0), ("nan", np.nan)):
        img = base.copy()
        if value is not None:
            img[:, :12] = value
        fits.PrimaryHDU(img).writeto(d / f"{name}.fits")
    run(RunConfig(input=str(d), out=str(tmp_path / "out"), workers=0, progress=False, mask="sep", init="sep",
                  errors="none", zeropoint=25.0), stream=io.StringIO())
    cat = {str(r["id"]): r for r in Table.read(tmp_path / "out" / "catalog.fits")}
    zero, nan, whole = cat["zero"], cat["nan"], cat["whole"]
    assert zero["flags"] & Flag.AUTO_MASKED_PIXELS and zero["n_bad_pixels"] == 48 * 12
    for p in ("sersic_mag", "sersic_r_e", "sersic_n"):
        assert zero[p] == pytest.approx(nan[p], rel=1e-6)
    assert abs(zero["sersic_mag"] - whole["sersic_mag"]) < 0.05
    assert abs(np.log10(zero["sersic_r_e"] / whole["sersic_r_e"])) < 0.03
