"""Issue 9, item 4: crowded and hostile cutouts never stop a run: sep overflows are retried with
larger limits, then flagged; any exception preparing one cutout is that cutout's row."""

import io

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galmoss_auto.automask.base import get_masker
from galmoss_auto.fitting.cutout import read_cutout
from galmoss_auto.fitting.dataset import CutoutFailure
from galmoss_auto.fitting.flags import Flag
from galmoss_auto.fitting.noise import SepOverflow, sep_extract
from galmoss_auto.initnet.base import get_initializer
from galmoss_auto.pipelines.prepare import Prepared, Preparer


def _crowded(n=128, stars=60, seed=3):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    img = 300 * np.exp(-((xx - 63.5) ** 2 + (yy - 63.5) ** 2) / 60.0)
    for x, y, f in zip(rng.uniform(3, n - 3, stars), rng.uniform(3, n - 3, stars),
                       rng.uniform(200, 3000, stars)):
        img += f * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 3.0)
    return img + 100.0 + rng.normal(0, 1.0, (n, n))


def test_sixty_bright_stars_prepare_and_fit(tmp_path):
    from galmoss_auto.pipelines.config import RunConfig
    from galmoss_auto.pipelines.run import run
    fits.PrimaryHDU(_crowded().astype(np.float32)).writeto(tmp_path / "crowd.fits")
    rec = run(RunConfig(input=str(tmp_path / "crowd.fits"), out=str(tmp_path / "o"), workers=0,
                        progress=False, mask="sep", init="sep", zeropoint=25.0, errors="none"),
              stream=io.StringIO())
    row = Table.read(tmp_path / "o" / "catalog.fits")[0]
    assert rec["counts"]["galaxies"] == 1 and not row["flags"] & Flag.BAD_INPUT
    assert row["mask_n_objects"] >= 30 and row["mask_n_masked"] > 100
    assert abs(float(row["sky_sky"]) - 100.0) < 2.0


def test_overflow_retried_then_flagged(monkeypatch):
    import sep
    real = sep.extract
    calls = []

    def flaky(*a, **k):
        calls.append(k.get("deblend_cont"))
        if len(calls) == 1:
            raise Exception("object deblending overflow")
        return real(*a, **k)
    monkeypatch.setattr(sep, "extract", flaky)
    data = np.ascontiguousarray(_crowded(64, 10) - 100.0)
    objects, _ = sep_extract(data, 3.0, err=1.0, segmentation_map=True)
    assert len(calls) == 2 and len(objects) > 3                  # retried with larger limits

    def always(*a, **k):
        raise Exception("internal pixel buffer full: object buffer overflow")
    monkeypatch.setattr(sep, "extract", always)
    with pytest.raises(SepOverflow, match="overflow persisted"):
        sep_extract(data, 3.0, err=1.0)
    # in the pipeline: the sky from clipped statistics, the masker and initializer flagged
    cut = read_cutout(_crowded(64, 10), id="c", zeropoint=25.0)
    out = Preparer(get_masker("sep"), get_initializer("sep"))(cut)
    assert isinstance(out, Prepared)
    assert out.flags & Flag.MASK_FAILED and out.flags & Flag.INIT_FALLBACK
    assert out.cutout.meta["sky"].method == "clipped" and "overflow" in out.columns["message"]

    def other(*a, **k):
        raise Exception("some other sep bug")
    monkeypatch.setattr(sep, "extract", other)
    with pytest.raises(Exception, match="other sep bug"):
        sep_extract(data, 3.0, err=1.0)


def test_any_preparation_exception_is_that_cutouts_row(tmp_path):
    from galmoss_auto.fitting.dataset import CutoutDataset

    def boom(cutout):
        raise KeyError("a bug in a stage")
    fits.PrimaryHDU(_crowded(32, 2).astype(np.float32)).writeto(tmp_path / "a.fits")
    item = CutoutDataset([{"id": "a", "image": str(tmp_path / "a.fits")}], transform=boom)[0]
    assert isinstance(item, CutoutFailure) and "KeyError" in item.message
    assert item.flags & Flag.BAD_INPUT


@pytest.mark.shared
def test_sep_ntt_field(shared_data):
    """A real crowded deep field (NTT/EMMI 256x256, sky left in) with its rms map."""
    folder = shared_data / "sep_ntt_emmi_field"
    cut = read_cutout(folder / "image.fits", sigma=folder / "rms.fits", zeropoint=25.0)
    out = Preparer(get_masker("sep"), get_initializer("sep"))(cut)
    assert isinstance(out, Prepared)
    assert out.columns["mask_n_objects"] > 20 and not out.flags & Flag.MASK_FAILED
    back = fits.getdata(folder / "back.fits").astype(float)
    # the measured sky agrees with SExtractor's background map (median) to a fraction of the rms
    rms = float(np.median(fits.getdata(folder / "rms.fits")))
    assert abs(out.cutout.meta["sky"].level - float(np.median(back))) < 0.5 * rms
