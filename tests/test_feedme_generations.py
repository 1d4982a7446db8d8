"""GALFIT feedmes and output files of both generations (issue 9, item 3).

GALFIT 3: 9) b/a, 10) PA, C0) boxiness.  GALFIT 2.x: 8) b/a, 9) PA, 10) diskiness/boxiness.
The files below are written by hand in the layout each GALFIT version writes.
"""

import os

import pytest

from galmoss_auto.fitting.modelspec import ModelSpecError, load_model_file, read_feedme
from galmoss_auto.fitting.profiles import DeVaucouleurs, Exponential, FlatSky, PointSource, Sersic

HEADER2 = """\
# IMAGE PARAMETERS
A) gal.fits            # Input Data image (FITS file)
B) imgblock.fits       # Output data image block
C) sigma.fits          # Noise image name (made from data if blank or "none")
D) psf.fits            # Input PSF image for convolution (FITS file)
E) 1                   # PSF oversampling factor relative to data
F) mask.fits           # Pixel mask (ASCII file or FITS file with non-0 values)
G) {constraints}       # Parameter constraint file
H) 1    93   1    93   # Image region to fit (xmin xmax ymin ymax)
I) 100    100          # Size of convolution box (x y)
J) 26.563              # Magnitude photometric zeropoint
K) 0.038  0.038        # Plate scale (dx dy)
O) regular             # Display type (regular, curses, both)
P) 0                   # Create output only? (1=yes; 0=optimize)
S) 0                   # Modify/create objects interactively?
"""

SERSIC2 = """
# Object number: 1
 0) sersic             # Object type
 1) 48.5  51.3  1 1    # position x, y        [pixel]
 3) 20.09      1       # total magnitude
 4) 5.12       1       #     R_e              [Pixels]
 5) 4.25       1       # Sersic exponent (deVauc=4, expdisk=1)
 6) 0.0000     0       #     ----------------
 7) 0.0000     0       #     ----------------
 8) 0.757      1       # axis ratio (b/a)
 9) -87.1      1       # position angle (PA)  [Degrees: Up=0, Left=90]
10) 0.0000     0       # diskiness(-)/boxiness(+)
 Z) 0                  # output image (see above)
"""

REST2 = """
# Object number: 2
 0) expdisk            # Object type
 1) 48.5  51.3  1 1    # position x, y        [pixel]
 3) 19.5       1       # total magnitude
 4) 12.0       1       #     R_s              [Pixels]
 8) 0.40       1       # axis ratio (b/a)
 9) 30.0       1       # position angle (PA)  [Degrees: Up=0, Left=90]
10) -0.30      1       # diskiness(-)/boxiness(+)
 Z) 0                  # output image (see above)

# Object number: 3
 0) devauc             # Object type
 1) 20.0  30.0  1 1    # position x, y        [pixel]
 3) 22.0       1       # total magnitude
 4) 2.0        1       #     R_e              [Pixels]
 8) 0.90       1       # axis ratio (b/a)
 9) 45.0       1       # position angle (PA)  [Degrees: Up=0, Left=90]
10) 0.0        0       # diskiness(-)/boxiness(+)
 Z) 0                  # output image (see above)

# Object number: 4
 0) psf                # Object type
 1) 70.0  10.0  1 1    # position x, y        [pixel]
 3) 18.0       1       # total magnitude
 Z) 0                  # output image (see above)

# Object number: 5
 0) sky
 1) 1.392      1       # sky background       [ADU counts]
 2) 0.000      0       # dsky/dx (sky gradient in x)
 3) 0.000      0       # dsky/dy (sky gradient in y)
 Z) 0                  # output image (see above)
"""

HEADER3 = """\
# IMAGE and GALFIT CONTROL PARAMETERS
A) gal.fits            # Input data image (FITS file)
B) imgblock.fits       # Output data image block
C) sigma.fits          # Sigma image name (made from data if blank or "none")
D) psf.fits   #        # Input PSF image and (optional) diffusion kernel
E) 1                   # PSF fine sampling factor relative to data
F) mask.fits           # Bad pixel mask (FITS image or ASCII coord list)
G) {constraints}       # File with parameter constraints (ASCII file)
H) 1    93   1    93   # Image region to fit (xmin xmax ymin ymax)
I) 100    100          # Size of the convolution box (x y)
J) 26.563              # Magnitude photometric zeropoint
K) 0.038  0.038        # Plate scale (dx dy)    [arcsec per pixel]
O) regular             # Display type (regular, curses, both)
P) 0                   # Choose: 0=optimize, 1=model, 2=imgblock, 3=subcomps
"""

COMPS3 = """
# Component number: 1
 0) sersic                 #  Component type
 1) 48.5  51.3  1 1        #  Position x, y
 3) 20.09      1           #  Integrated magnitude
 4) 5.12       1           #  R_e (effective radius)   [pix]
 5) 4.25       1           #  Sersic index n (de Vaucouleurs n=4)
 6) 0.0000     0           #     -----
 7) 0.0000     0           #     -----
 8) 0.0000     0           #     -----
 9) 0.757      1           #  Axis ratio (b/a)
10) -87.1      1           #  Position angle (PA) [deg: Up=0, Left=90]
 Z) 0                      #  Skip this model in output image?  (yes=1, no=0)

# Component number: 2
 0) expdisk                #  Component type
 1) 48.5  51.3  1 1        #  Position x, y
 3) 19.5       1           #  Integrated magnitude
 4) 12.0       1           #  R_s (disk scale-length)   [pix]
 9) 0.40       1           #  Axis ratio (b/a)
10) 30.0       1           #  Position angle (PA) [deg: Up=0, Left=90]
C0) -0.30      1           #  traditional diskyness(-)/boxyness(+)
 Z) 0                      #  Skip this model in output image?  (yes=1, no=0)

# Component number: 3
 0) devauc                 #  Component type
 1) 20.0  30.0  1 1        #  Position x, y
 3) 22.0       1           #  Integrated magnitude
 4) 2.0        1           #  R_e (effective radius)   [pix]
 9) 0.90       1           #  Axis ratio (b/a)
10) 45.0       1           #  Position angle (PA) [deg: Up=0, Left=90]
 Z) 0                      #  Skip this model in output image?  (yes=1, no=0)

# Component number: 4
 0) psf                    #  Component type
 1) 70.0  10.0  1 1        #  Position x, y
 3) 18.0       1           #  Integrated magnitude
 Z) 0                      #  Skip this model in output image?  (yes=1, no=0)

# Component number: 5
 0) sky                    #  Component type
 1) 1.392      1           #  Sky background at center of fitting region [ADUs]
 2) 0.000      0           #  dsky/dx (sky gradient in x)     [ADUs/pix]
 3) 0.000      0           #  dsky/dy (sky gradient in y)     [ADUs/pix]
 Z) 0                      #  Skip this model in output image?  (yes=1, no=0)
"""

EXPECTED_INIT = {
    "sersic_x": 48.5, "sersic_y": 51.3, "sersic_mag": 20.09, "sersic_r_e": 5.12, "sersic_n": 4.25,
    "sersic_q": 0.757, "sersic_pa": -87.1,
    "expdisk_x": 48.5, "expdisk_y": 51.3, "expdisk_mag": 19.5, "expdisk_r_s": 12.0, "expdisk_q": 0.4,
    "expdisk_pa": 30.0, "expdisk_c0": -0.3,
    "devauc_x": 20.0, "devauc_y": 30.0, "devauc_mag": 22.0, "devauc_r_e": 2.0, "devauc_q": 0.9,
    "devauc_pa": 45.0,
    "psf_x": 70.0, "psf_y": 10.0, "psf_mag": 18.0, "sky_sky": 1.392}


def _write(folder, name, text):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def _check_model(model, init):
    assert [type(c) for c in model.components] == [Sersic, Exponential, DeVaucouleurs, PointSource, FlatSky]
    assert [c.name for c in model.components] == ["sersic", "expdisk", "devauc", "psf", "sky"]
    # boxiness free and non-zero -> boxy; held at 0 -> the plain ellipse
    assert model.components[1].boxy and not model.components[0].boxy and not model.components[2].boxy
    assert init == pytest.approx(EXPECTED_INIT)
    assert model.fixed == {}


def test_galfit2_feedme_uses_galfit2_numbering(tmp_path):
    path = _write(tmp_path, "galfit2.feedme", HEADER2.format(constraints="none") + SERSIC2 + REST2)
    model, init, opts = read_feedme(path)
    assert opts["feedme_version"] == 2
    _check_model(model, init)                       # q = 0.757 and PA = -87.1, not q = -87.1
    assert opts["zeropoint"] == 26.563 and opts["pixel_scale"] == 0.038 and opts["mode"] == 0


def test_galfit3_feedme_uses_galfit3_numbering(tmp_path):
    path = _write(tmp_path, "galfit3.feedme", HEADER3.format(constraints="none") + COMPS3)
    model, init, opts = read_feedme(path)
    assert opts["feedme_version"] == 3
    _check_model(model, init)


def test_both_generations_give_the_same_model(tmp_path):
    m2, i2, _ = read_feedme(_write(tmp_path, "a.feedme", HEADER2.format(constraints="none") + SERSIC2 + REST2))
    m3, i3, _ = read_feedme(_write(tmp_path, "b.feedme", HEADER3.format(constraints="none") + COMPS3))
    assert m2.full_names == m3.full_names and m2.free_names == m3.free_names and i2 == i3


def test_galfit2_without_comments_is_told_by_its_values(tmp_path):
    # the unmarked layout of the files: read as GALFIT 3, 9) = -87.1 would be b/a
    text = "0) sersic\n1) 30 30 1 1\n3) 18 1\n4) 5 1\n5) 2 1\n8) 0.6 1\n9) -87.1 1\n10) 0 0\n"
    model, init, opts = read_feedme(_write(tmp_path, "plain.feedme", text))
    assert opts["feedme_version"] == 2 and "GALFIT 3" in opts["feedme_version_reason"]
    assert init["sersic_q"] == 0.6 and init["sersic_pa"] == -87.1 and "sersic.c0" not in model.full_names


def test_galfit3_dummy_line_8_is_not_a_ratio(tmp_path):
    text = "0) sersic\n1) 30 30 1 1\n3) 18 1\n4) 5 1\n5) 2 1\n8) 0 0\n9) 0.6 1\n10) 0.4 1\n"
    _, init, opts = read_feedme(_write(tmp_path, "d.feedme", text))
    assert opts["feedme_version"] == 3 and init["sersic_q"] == 0.6 and init["sersic_pa"] == 0.4


def test_galfit2_boxiness_line_10(tmp_path):
    text = "0) sersic\n1) 30 30 1 1\n3) 18 1\n4) 5 1\n5) 2 1\n8) 0.6 1\n9) 40 1\n10) 0.5 1\n"
    model, init, opts = read_feedme(_write(tmp_path, "box.feedme", text))
    assert opts["feedme_version"] == 2 and model.components[0].boxy
    assert init["sersic_c0"] == 0.5 and "sersic.c0" in model.free_names


AMBIGUOUS = "0) sersic\n1) 30 30 1 1\n3) 18 1\n4) 5 1\n5) 2 1\n8) 0.8 1\n9) 0.5 1\n10) 0.3 1\n"


def test_ambiguous_file_needs_a_version(tmp_path):
    path = _write(tmp_path, "amb.feedme", AMBIGUOUS)
    with pytest.raises(ModelSpecError) as exc:
        read_feedme(path)
    msg = str(exc.value)
    assert str(path) in msg and "--feedme-version" in msg and "GALFIT 2" in msg and "GALFIT 3" in msg
    m2, i2, o2 = read_feedme(path, feedme_version=2)
    assert (i2["sersic_q"], i2["sersic_pa"], i2["sersic_c0"]) == (0.8, 0.5, 0.3) and o2["feedme_version"] == 2
    m3, i3, o3 = load_model_file(path, feedme_version=3)
    assert (i3["sersic_q"], i3["sersic_pa"]) == (0.5, 0.3) and "sersic_c0" not in i3
    assert o3["feedme_version"] == 3 and not m3.components[0].boxy
    # GALFIT's comments settle it
    commented = AMBIGUOUS.replace("8) 0.8 1", "8) 0.8 1  # axis ratio (b/a)")
    assert read_feedme(_write(tmp_path, "c.feedme", commented))[2]["feedme_version"] == 2


def test_version_that_contradicts_the_file_is_an_error(tmp_path):
    path = _write(tmp_path, "g3.feedme", HEADER3.format(constraints="none") + COMPS3)
    with pytest.raises(ModelSpecError, match=r"feedme_version=2 contradicts.*C0"):
        read_feedme(path, feedme_version=2)
    with pytest.raises(ModelSpecError, match="must be 2"):
        read_feedme(path, feedme_version=4)
    yaml = _write(tmp_path, "m.yaml", "components: [{type: sersic}]\n")
    with pytest.raises(ModelSpecError, match="feedme_version applies"):
        load_model_file(yaml, feedme_version=2)
    mixed = "0) sersic\n8) 0.5 1\n0) sersic\n9) 0.5 1\n10) 3 1\n"
    with pytest.raises(ModelSpecError, match="mixes GALFIT 2 and GALFIT 3"):
        read_feedme(_write(tmp_path, "mixed.feedme", mixed))


def test_forced_wrong_version_reports_the_bad_value_and_the_hint(tmp_path):
    path = _write(tmp_path, "g2.feedme", HEADER2.format(constraints="none") + SERSIC2)
    with pytest.raises(ModelSpecError) as exc:
        read_feedme(path, feedme_version=3)
    msg = str(exc.value)
    # line 26 is SERSIC2's 9) (the header has 15 lines, then a blank and the comment line)
    assert f"{path}:{HEADER2.count(chr(10)) + 11}" in msg and "-87.1" in msg and "(0, 1]" in msg
    assert "GALFIT 3 numbering" in msg


GALFIT_OUT = """\

#  Input menu file: galfit.feedme

#  Chi^2/nu = 1.043,  Chi^2 = 8712.3,  Ndof = 8353

================================================================================
# IMAGE and GALFIT CONTROL PARAMETERS
A) ../data/gal.fits    # Input data image (FITS file)
B) imgblock.fits       # Output data image block
C) none                # Sigma image name (made from data if blank or "none")
D) /abs/psf.fits       # Input PSF image and (optional) diffusion kernel
E) 1                   # PSF fine sampling factor relative to data
F) none                # Bad pixel mask (FITS image or ASCII coord list)
G) none                # File with parameter constraints (ASCII file)
H) 1    93   1    93   # Image region to fit (xmin xmax ymin ymax)
I) 100    100          # Size of the convolution box (x y)
J) 26.563              # Magnitude photometric zeropoint
K) 0.038  0.038        # Plate scale (dx dy)   [arcsec per pixel]
O) regular             # Display type (regular, curses, both)
P) 0                   # Choose: 0=optimize, 1=model, 2=imgblock, 3=subcomps

# INITIAL FITTING PARAMETERS
#
#   For component type, the allowed functions are:
#       sersic, expdisk, edgedisk, devauc, king, nuker, psf,
#       gaussian, moffat, ferrer, and sky.
#
# Component number: 1
 0) sersic                 #  Component type
 1) 48.5180  51.2800  1 1  #  Position x, y
 3) 20.0890     1          #  Integrated magnitude
 4) 5.1160      1          #  R_e (effective radius)   [pix]
 5) *9.8500*    1          #  Sersic index n (de Vaucouleurs n=4)
 6) 0.0000      0          #     -----
 7) 0.0000      0          #     -----
 8) 0.0000      0          #     -----
 9) 0.7570      1          #  Axis ratio (b/a)
10) -60.3690    1          #  Position angle (PA) [deg: Up=0, Left=90]
 Z) 0                      #  Skip this model in output image?  (yes=1, no=0)

# Component number: 2
 0) sky                    #  Component type
 1) [1.3920]               #  Sky background at center of fitting region [ADUs]
 2) 0.000e+00      0       #  dsky/dx (sky gradient in x)     [ADUs/pix]
 3) 0.000e+00      0       #  dsky/dy (sky gradient in y)     [ADUs/pix]
 Z) 0                      #  Skip this model in output image?  (yes=1, no=0)

================================================================================
"""


def test_galfit_output_file_reads_like_a_feedme(tmp_path):
    path = _write(tmp_path / "fits", "galfit.01", GALFIT_OUT)
    model, init, opts = read_feedme(path)
    assert opts["feedme_version"] == 3
    assert init["sersic_n"] == 9.85 and init["sersic_q"] == 0.757 and init["sersic_pa"] == -60.369
    assert init["sky_sky"] == 1.392 and model.fixed == {"sky.sky": None}    # [..]: held fixed
    assert len(opts["galfit_marked"]) == 1 and "galfit.01:33" in opts["galfit_marked"][0]
    assert opts["image"] == str(tmp_path / "fits" / ".." / "data" / "gal.fits")
    assert opts["psf"] == "/abs/psf.fits" and opts["sigma"] is None
    # `galfit -o` style *.out names are read the same way
    same = read_feedme(_write(tmp_path, "fit.out", GALFIT_OUT))
    assert same[1] == init


def test_paths_are_relative_to_the_feedme_folder(tmp_path, monkeypatch):
    _write(tmp_path / "work", "cons.txt", "1 n 1 to 6\n")
    path = _write(tmp_path / "work", "galfit2.feedme", HEADER2.format(constraints="cons.txt") + SERSIC2)
    monkeypatch.chdir(tmp_path)                   # somewhere else
    _, _, opts = read_feedme(os.path.relpath(path, tmp_path))
    folder = os.path.join("work")
    for key, name in (("image", "gal.fits"), ("sigma", "sigma.fits"), ("psf", "psf.fits"),
                      ("mask", "mask.fits"), ("constraints", "cons.txt")):
        assert opts[key] == os.path.join(folder, name), key


def test_constraints_by_name_and_by_number_in_both_generations(tmp_path):
    _write(tmp_path, "c2.txt", "1 8 0.3 to 0.9   # b/a, GALFIT 2 numbering\n1 5 0.5 to 20\n1 re -1 1\n")
    _write(tmp_path, "c3.txt", "1 9 0.3 to 0.9   # b/a, GALFIT 3 numbering\n1 n 0.5 to 20\n1 4 -1 1\n")
    m2, _, _ = read_feedme(_write(tmp_path, "a.feedme", HEADER2.format(constraints="c2.txt") + SERSIC2))
    m3, _, _ = read_feedme(_write(tmp_path, "b.feedme", HEADER3.format(constraints="c3.txt") + COMPS3))
    for m in (m2, m3):
        # n's range is narrowed to what the model supports (n <= 10); r_e relative to 5.12
        want = {"sersic.q": (0.3, 0.9), "sersic.n": (0.5, 10.0), "sersic.r_e": (4.12, 6.12)}
        assert set(m.bounds) == set(want)
        for name, pair in want.items():
            assert m.bounds[name] == pytest.approx(pair), name
    _write(tmp_path, "bad.txt", "1 1 -2 2\n")
    with pytest.raises(ModelSpecError, match=r"bad.txt:1.*position"):
        read_feedme(_write(tmp_path, "c.feedme", HEADER3.format(constraints="bad.txt") + COMPS3))
    _write(tmp_path, "out.txt", "1 n 20 to 30\n")
    with pytest.raises(ModelSpecError, match=r"out.txt:1.*outside the range the model supports"):
        read_feedme(_write(tmp_path, "d.feedme", HEADER3.format(constraints="out.txt") + COMPS3))


BASE3 = "0) sersic\n1) 30 30 1 1\n3) 18 1\n4) {re} {tre}\n5) {n} {tn}\n9) {q} 1\n10) 20 1\n"


@pytest.mark.parametrize("values, words", [
    (dict(q="-87.1"), ["bad.feedme:6", "q = -87.1", "(0, 1]"]),
    (dict(q="1.3"), ["bad.feedme:6", "q = 1.3", "(0, 1]"]),
    (dict(q="0"), ["bad.feedme:6", "(0, 1]"]),
    (dict(n="0"), ["bad.feedme:5", "n = 0.0", "> 0"]),
    (dict(n="-1.5"), ["bad.feedme:5", "> 0"]),
    (dict(re="-2"), ["bad.feedme:4", "r_e = -2.0", "> 0"]),
    (dict(re="0"), ["bad.feedme:4", "> 0"]),
    (dict(re="nan"), ["bad.feedme:4", "not finite"]),
    (dict(n="inf"), ["bad.feedme:5", "not finite"]),
    (dict(n="12", tn="0"), ["bad.feedme:5", "fixed", "10.0"]),     # cannot be held at 12
])
def test_bad_values_name_file_line_and_bound(tmp_path, values, words):
    v = dict(re="5", tre="1", n="2", tn="1", q="0.6") | values
    with pytest.raises(ModelSpecError) as exc:
        read_feedme(_write(tmp_path, "bad.feedme", BASE3.format(**v)), feedme_version=3)
    for w in words:
        assert w in str(exc.value), (w, str(exc.value))


def test_bad_values_without_a_version(tmp_path):
    # q = 1.3 under GALFIT 3 and no 8): structurally GALFIT 3, so the value error is reported
    with pytest.raises(ModelSpecError, match=r"bad.feedme:6.*\(0, 1\]"):
        read_feedme(_write(tmp_path, "bad.feedme", BASE3.format(re="5", tre="1", n="2", tn="1", q="1.3")))
    # an expdisk's size and a moffat's beta
    with pytest.raises(ModelSpecError, match=r"e.feedme:3.*r_s"):
        read_feedme(_write(tmp_path, "e.feedme", "0) expdisk\n3) 18 1\n4) -3 1\n9) 0.5 1\n10) 0 1\n"))
    with pytest.raises(ModelSpecError, match=r"m.feedme:3.*beta.*> 1"):
        read_feedme(_write(tmp_path, "m.feedme", "0) moffat\n4) 3 1\n5) 0.8 1\n9) 0.5 1\n10) 0 1\n"))
