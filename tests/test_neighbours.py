"""Simultaneous fitting of a target and its overlapping neighbour, against masking it."""

import numpy as np
import pytest
from astropy.table import Table

pytest.importorskip("galsim")

from galmoss_auto.automask.detect import grow
from galmoss_auto.fitting import Cutout, Flag, fit
from galmoss_auto.fitting.neighbours import fit_with_neighbours, neighbours_from_table

N = 6


@pytest.fixture(scope="module")
def blends(tmp_path_factory):
    """Bright centrals, each with one overlapping galaxy (0.3-2 x the sum of r_e away)."""
    from galmoss_auto.data_scripts.contaminants import ContaminantConfig
    from galmoss_auto.data_scripts.outputs import read_shard
    from galmoss_auto.data_scripts.simulate import simulate

    out = tmp_path_factory.mktemp("blends")
    cc = ContaminantConfig(galaxy={"fixed": 0}, star={"fixed": 0}, blend_prob=1.0)
    simulate("sdss", "r", N, seed=4242, out=out, size=64, workers=1, fits=True, progress=False,
             contaminant_config=cc, mag_range=(15.5, 17.5))
    return out, read_shard(out / "shards" / "shard-00000.npz"), Table.read(out / "objects.ecsv"), \
        Table.read(out / "truth.ecsv")


def _problem(blends):
    _, sh, obj, _ = blends
    plain, masked, nbs = [], [], []
    init = {k: [] for k in ("sersic_x", "sersic_y", "sersic_mag", "sersic_r_e", "sersic_n", "sersic_q", "sersic_pa")}
    for i in range(N):
        gid, seg = str(sh["id"][i]), sh["segmentation"][i]
        o = obj[obj["id"] == gid]
        b, c = o[o["kind"] == "blend"][0], o[o["kind"] == "central"][0]
        base = dict(id=gid, image=sh["image"][i].astype(float), sigma=sh["sigma"][i].astype(float),
                    psf=sh["psf"][i].astype(float), zeropoint=22.5)
        plain.append(Cutout(**base))
        # the best a masker can do: the neighbour's exact footprint, grown by 2 px, central kept
        masked.append(Cutout(**base, mask=grow(seg == b["label"], 2) & (seg != 1)))
        # starts as a masker's instance moments would give (offset from the truth)
        nbs.append([{"kind": "galaxy", "x": b["x"] + 0.5, "y": b["y"] - 0.5, "mag": b["mag"] + 0.3,
                     "r_e": b["r_e"] * 1.2, "n": 1.5, "q": 0.8, "pa": 0.0}])
        for k, v in (("sersic_x", c["x"] + 0.5), ("sersic_y", c["y"] + 0.5), ("sersic_mag", c["mag"] + 0.3),
                     ("sersic_r_e", c["r_e"] * 1.2), ("sersic_n", 2.0), ("sersic_q", 0.8), ("sersic_pa", 0.0)):
            init[k].append(v)
    return plain, masked, nbs, init


def test_joint_fit_beats_masking(blends):
    _, _, obj, truth = blends
    plain, masked, nbs, init = _problem(blends)
    cat_mask = fit(masked, init, device="cpu")
    cat_nb, table = fit_with_neighbours(plain, init, nbs, device="cpu")
    # the main catalog has exactly a plain fit's form
    assert cat_nb.colnames == cat_mask.colnames and list(cat_nb["id"]) == [c.id for c in plain]
    dm_mask = np.abs(np.asarray(cat_mask["sersic_mag"]) - truth["sersic_mag"])
    dm_nb = np.abs(np.asarray(cat_nb["sersic_mag"]) - truth["sersic_mag"])
    dr_mask = np.abs(np.log10(np.asarray(cat_mask["sersic_r_e"]) / truth["sersic_r_e"]))
    dr_nb = np.abs(np.log10(np.asarray(cat_nb["sersic_r_e"]) / truth["sersic_r_e"]))
    assert np.median(dm_nb) < 0.5 * np.median(dm_mask)
    assert np.median(dr_nb) < np.median(dr_mask)
    assert np.median(dm_nb) < 0.03
    # the neighbour itself is recovered and reported with units
    assert len(table) == N and set(table["kind"]) == {"galaxy"} and list(table["index"]) == [1] * N
    assert str(table["mag"].unit) == "mag" and str(table["r_e"].unit) == "pix"
    blend = [obj[(obj["id"] == i) & (obj["kind"] == "blend")][0] for i in table["id"]]
    assert np.median(np.abs(np.asarray(table["mag"]) - [b["mag"] for b in blend])) < 0.1
    assert np.median(np.hypot(np.asarray(table["x"]) - [b["x"] for b in blend],
                              np.asarray(table["y"]) - [b["y"] for b in blend])) < 0.3


def test_mixed_groups_stars_without_psf_and_table_input(blends):
    plain, _, nbs, init = _problem(blends)
    cuts = plain[:3]
    # no neighbour, a galaxy + a star, a star in a cutout without a PSF (a Gaussian)
    no_psf = Cutout(id=cuts[2].id, image=cuts[2].image, sigma=cuts[2].sigma, zeropoint=22.5)
    lists = [[], nbs[1] + [{"kind": "star", "x": 5.0, "y": 5.0, "mag": 22.0}],
             [{"kind": "star", "x": 60.0, "y": 60.0, "mag": 22.0}]]
    sub = {k: np.asarray(v[:3]) for k, v in init.items()}
    cat, table = fit_with_neighbours([cuts[0], cuts[1], no_psf], sub, lists, device="cpu", errors="none")
    assert list(cat["id"]) == [c.id for c in cuts]
    assert list(zip(table["id"], table["index"], table["kind"])) == [
        (cuts[1].id, 1, "galaxy"), (cuts[1].id, 2, "star"), (cuts[2].id, 1, "star")]
    assert np.isnan(table["n"][1]) and np.isfinite(table["x"][2])
    # a table gives the same lists
    t = Table(rows=[(cuts[1].id, "star", 5.0, 5.0, 22.0)], names=("id", "kind", "x", "y", "mag"))
    assert neighbours_from_table(t, [c.id for c in cuts])[1][0]["kind"] == "star"
    with pytest.raises(ValueError, match="kind"):
        neighbours_from_table(Table(rows=[("a", "comet", 1.0, 1.0, 20.0)], names=("id", "kind", "x", "y", "mag")), ["a"])


def test_cli_fit_neighbours(blends, tmp_path):
    from galmoss_auto.fitting.cli_fit import main

    out_dir, sh, obj, truth = blends
    rows = [(r["id"], "galaxy", r["x"], r["y"], r["mag"], r["r_e"], 1.5, 0.8, 0.0)
            for r in obj if r["kind"] == "blend"]
    nb = Table(rows=rows, names=("id", "kind", "x", "y", "mag", "r_e", "n", "q", "pa"))
    nb.write(tmp_path / "nb.ecsv", format="ascii.ecsv")
    init = Table({"id": truth["id"], "sersic_x": truth["sersic_x"], "sersic_y": truth["sersic_y"],
                  "sersic_mag": truth["sersic_mag"] + 0.2, "sersic_r_e": truth["sersic_r_e"]})
    init.write(tmp_path / "init.ecsv", format="ascii.ecsv")
    code = main(["--manifest", str(out_dir / "manifest.ecsv"), "--init", str(tmp_path / "init.ecsv"),
                 "--neighbours", str(tmp_path / "nb.ecsv"), "--out", str(tmp_path / "out"), "--errors", "none"])
    assert code == 0
    table = Table.read(tmp_path / "out" / "neighbours.ecsv")
    assert len(table) == N and (tmp_path / "out" / "neighbours.fits").is_file()
    cat = Table.read(tmp_path / "out" / "catalog.ecsv")
    assert np.median(np.abs(cat["sersic_mag"] - truth["sersic_mag"])) < 0.03


def test_a_neighbour_started_away_from_its_light_stays_in_its_window(blends):
    # a "neighbour" started on empty sky 8 px beyond the real one: left free it runs to the
    # light (here the real neighbour, on real stamps the target's core); with its window it
    # stays within the window of its start.  (Its size is left free here: held 6 px off its
    # light, only by swelling can it still take that light, and not the target.)
    _, _, obj, _ = blends
    plain, _, nbs, init = _problem(blends)
    away = [[dict(nb[0], x=nb[0]["x"] + 8.0)] for nb in nbs]
    held_cat, held = fit_with_neighbours(plain, init, away, device="cpu", errors="none", window=2.0, growth=None)
    _, free = fit_with_neighbours(plain, init, away, device="cpu", errors="none", window=None, growth=None)
    start = np.array([nb[0]["x"] for nb in away])
    assert np.all(np.abs(np.asarray(held["x"]) - start) <= 2.0 + 1e-6)
    # a neighbour held at its window's edge flags the row NEIGHBOUR_AT_BOUND, not AT_BOUND
    # (the target's own parameters are free of their bounds here)
    edge = np.isclose(np.abs(np.asarray(held["x"]) - start), 2.0, atol=1e-4)
    assert edge.any()
    assert all(f & Flag.NEIGHBOUR_AT_BOUND for f in np.asarray(held["flags"])[edge])
    assert not any(f & Flag.AT_BOUND for f in np.asarray(held_cat["flags"]))
    assert np.all(np.abs(np.asarray(held["y"]) - [nb[0]["y"] for nb in away]) <= 2.0 + 1e-6)
    assert np.median(np.abs(np.asarray(free["x"]) - start)) > 3.0
    with pytest.raises(ValueError, match="window"):
        fit_with_neighbours(plain, init, away, device="cpu", window=0.0)


def test_a_neighbours_growth_is_limited(blends):
    # neighbours started at a third of their true size: with a growth limit of 1.5 they end
    # at most 1.5 x their start along the start's axis and 1.5² x along the other (the axes
    # may swap that far), on the limit and so flagged; without one they grow to their size
    _, _, obj, _ = blends
    plain, _, nbs, init = _problem(blends)
    small = [[dict(nb[0], r_e=nb[0]["r_e"] / 1.2 / 3.0)] for nb in nbs]
    start = np.array([nb[0]["r_e"] for nb in small])
    cat, held = fit_with_neighbours(plain, init, small, device="cpu", errors="none", growth=1.5)
    _, free = fit_with_neighbours(plain, init, small, device="cpu", errors="none", growth=None)
    r_held, r_free = np.asarray(held["r_e"], float), np.asarray(free["r_e"], float)
    assert np.all(r_held <= 1.5 ** 2 * start * (1 + 1e-6))
    assert np.all(np.asarray(cat["flags"]) & Flag.NEIGHBOUR_AT_BOUND)
    assert np.median(r_free / start) > 2.5
    with pytest.raises(ValueError, match="growth"):
        fit_with_neighbours(plain, init, small, device="cpu", growth=1.0)


def test_a_neighbour_that_fades_away_leaves_the_targets_errors(blends):
    # a second "neighbour" started on empty sky in a corner, 3 mag fainter than the real one:
    # nothing there, it runs to a bound (often the faint one, where its Jacobian vanishes);
    # held fixed in the covariance, it neither fails the target's errors nor gets errors itself
    plain, _, nbs, init = _problem(blends)
    ghost = [nb + [dict(nb[0], x=4.0, y=4.0, mag=nb[0]["mag"] + 3.0, r_e=2.0)] for nb in nbs]
    cat, table = fit_with_neighbours(plain, init, ghost, device="cpu", window=2.0)
    flags = np.asarray(cat["flags"])
    assert not any(f & Flag.COVARIANCE_FAILED for f in flags)
    assert np.all(np.isfinite(np.asarray(cat["sersic_mag_err"])))
    ghosts = table[np.asarray(table["index"]) == 2]
    assert len(ghosts) == N
    at_bound = np.array([bool(f & Flag.NEIGHBOUR_AT_BOUND) for f in ghosts["flags"]])
    assert at_bound.any()
    errs = np.stack([np.asarray(ghosts[c], float) for c in ("x_err", "y_err", "mag_err", "r_e_err", "n_err",
                                                           "q_err", "pa_err")], 1)
    assert np.isnan(errs[at_bound]).any(1).all()
    # one faded to the faint magnitude bound constrains none of its parameters: no errors at all
    # (before, its position errors came out near 1e15 px)
    faded = np.isclose(np.asarray(ghosts["mag"], float), 60.0)
    assert faded.any()
    assert np.isnan(errs[faded]).all()
    assert np.isfinite(errs[~at_bound]).all()


def test_covariance_holds_parameters_fixed():
    import torch
    from galmoss_auto.fitting.uncertainty import covariance
    A = torch.tensor([[[4.0, 1.0, 0.0], [1.0, 3.0, 0.0], [0.0, 0.0, 0.0]]], dtype=torch.float64)
    _, ok = covariance(A)
    assert not ok[0]                      # the third parameter has no Jacobian: singular
    C, ok = covariance(A, torch.tensor([[False, False, True]]))
    assert ok[0]
    assert torch.allclose(C[0, :2, :2], torch.linalg.inv(A[0, :2, :2]))
    assert torch.all(C[0, 2] == 0) and torch.all(C[0, :, 2] == 0)


def test_a_neighbour_at_the_edge_is_exempt_from_the_growth_limit():
    # its light runs off the cutout, so the pixels it was started from understate its size
    import galsim
    from galmoss_auto.fitting.neighbours import _at_edge
    assert _at_edge({"x": 5.0, "y": 30.0, "r_e": 3.0}, (64, 64))        # 4.5 px from the edge, < 2 r_e
    assert not _at_edge({"x": 30.0, "y": 30.0, "r_e": 3.0}, (64, 64))
    assert not _at_edge({"x": 5.0, "y": 30.0, "mag": 20.0}, (64, 64))   # a star has no size to limit
    n, zp = 64, 22.5
    psf = galsim.Moffat(beta=3.5, fwhm=3.0)

    def sersic(x, y, mag, r_e, nn):
        g = galsim.Sersic(n=nn, half_light_radius=r_e, flux=10 ** (-0.4 * (mag - zp)))
        return galsim.Convolve(g, psf).drawImage(nx=n, ny=n, scale=1.0, method="auto",
                                                 offset=(x - (n + 1) / 2, y - (n + 1) / 2)).array
    rng = np.random.default_rng(7)
    img = sersic(33.0, 32.0, 17.0, 3.0, 1.5) + sersic(5.0, 30.0, 16.0, 9.0, 2.5)
    img = img + rng.normal(0, 0.05, img.shape)
    cut = Cutout(id="edge", image=img, sigma=np.full(img.shape, 0.05),
                 psf=psf.drawImage(nx=25, ny=25, scale=1.0).array, zeropoint=zp)
    init = {"sersic_x": [33.5], "sersic_y": [31.5], "sersic_mag": [17.3], "sersic_r_e": [3.5], "sersic_n": [2.0],
            "sersic_q": [0.9], "sersic_pa": [0.0]}
    nb = [[{"kind": "galaxy", "x": 5.5, "y": 30.5, "mag": 16.6, "r_e": 3.0, "n": 1.5, "q": 0.9, "pa": 0.0}]]
    cat, table = fit_with_neighbours([cut], init, nb, device="cpu", errors="none", growth=1.5)
    assert float(table["r_e"][0]) > 1.5 ** 2 * 3.0                    # grew past the limit it is exempt from
    assert abs(float(cat["sersic_mag"][0]) - 17.0) < 0.05
