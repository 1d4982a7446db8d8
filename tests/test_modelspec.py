"""Model descriptions: YAML/TOML files, GALFIT feedme files and constraint files -> Model."""

import math

import pytest
import torch
from scipy.special import beta as beta_fn

from galmoss_auto.fitting.model import Tie
from galmoss_auto.fitting.modelspec import (ModelSpecError, load_model_file, model_from_dict, read_feedme,
                                            read_model)
from galmoss_auto.fitting.profiles import Exponential, Ferrers, FlatSky, Sersic, TiltedSky

YAML = """\
components:
  - {name: bulge, type: sersic}
  - {name: disk, type: expdisk, boxy: false}
  - {name: sky, type: sky}
fixed: {bulge.n: 4.0, disk.q: null}     # null = keep the initial value
ties:
  - {target: disk.x, source: bulge.x}
  - {target: disk.mag, source: bulge.mag, offset: 0.5}
  - {target: disk.r_s, source: bulge.r_e, ratio: 2.0}
bounds: {bulge.n: [0.5, 8]}
"""

# the same model; TOML has no null, so "init" keeps the initial value; dotted names nest or quote
TOML = """\
[[components]]
name = "bulge"
type = "sersic"

[[components]]
name = "disk"
type = "expdisk"
boxy = false

[[components]]
name = "sky"
type = "sky"

[fixed]
bulge.n = 4.0
"disk.q" = "init"

[[ties]]
target = "disk.x"
source = "bulge.x"

[[ties]]
target = "disk.mag"
source = "bulge.mag"
offset = 0.5

[[ties]]
target = "disk.r_s"
source = "bulge.r_e"
ratio = 2.0

[bounds]
"bulge.n" = [0.5, 8]
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_and_toml_give_the_same_model(tmp_path):
    a = read_model(_write(tmp_path, "m.yaml", YAML))
    b = read_model(_write(tmp_path, "m.toml", TOML))
    for m in (a, b):
        assert [type(c) for c in m.components] == [Sersic, Exponential, FlatSky]
        assert [c.name for c in m.components] == ["bulge", "disk", "sky"]
        assert m.fixed == {"bulge.n": 4.0, "disk.q": None}
        assert m.ties == [Tie("disk.x", "bulge.x"), Tie("disk.mag", "bulge.mag", offset=0.5),
                          Tie("disk.r_s", "bulge.r_e", ratio=2.0)]
        assert m.bounds == {"bulge.n": (0.5, 8.0)}
    assert a.free_names == b.free_names
    assert "disk.x" not in a.free_names and "bulge.n" not in a.free_names and "disk.y" in a.free_names
    assert torch.equal(a.A, b.A) and torch.equal(a.tie_offset, b.tie_offset)
    # the r_s = 2 r_e tie is an offset of log 2 in the internal (log) parameters
    assert a.tie_offset[a.full_names.index("disk.r_s")].item() == pytest.approx(math.log(2.0))
    assert load_model_file(tmp_path / "m.yaml")[1:] == ({}, {})


def test_defaults_list_fixed_and_boxy():
    m = model_from_dict({"components": [{"type": "sersic"}, {"type": "sersic", "boxy": True},
                                        {"type": "tiltedsky"}],
                         "fixed": ["sersic.n"]})
    assert [c.name for c in m.components] == ["sersic", "sersic2", "sky"]
    assert isinstance(m.components[2], TiltedSky)
    assert "sersic2.c0" in m.full_names and "sersic.c0" not in m.full_names
    assert m.fixed == {"sersic.n": None}


@pytest.mark.parametrize("text, words", [
    ("components: [{type: sersic}]\nfixd: {sersic.n: 4}\n", ["fixd", "allowed"]),
    ("components: [{type: sersic, colour: red}]\n", ["components[0]", "colour"]),
    ("components: [{type: sersik}]\n", ["sersik", "known"]),
    ("components: [{type: sersic}]\nfixed: {sersic.r_s: 3}\n", ["sersic.r_s"]),
    ("components: [{type: sersic}]\nties: [{target: sersic.x, from: sersic.y}]\n", ["ties[0]", "from"]),
    ("components: [{type: sersic}]\nbounds: {sersic.n: [8, 0.5]}\n", ["bounds.sersic.n", "lower"]),
    ("components: [{type: sky, boxy: true}]\n", ["boxiness"]),
    ("components: [{type: sersic}\n", ["cannot parse"]),
])
def test_bad_descriptions_name_the_file_and_key(tmp_path, text, words):
    path = _write(tmp_path, "bad_model.yaml", text)
    with pytest.raises(ModelSpecError) as exc:
        read_model(path)
    message = str(exc.value)
    assert str(path) in message
    for w in words:
        assert w in message


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(ModelSpecError, match="suffix"):
        read_model(_write(tmp_path, "m.json", "{}"))
    with pytest.raises(ModelSpecError, match="not found"):
        read_model(tmp_path / "nope.yaml")


# A feedme as GALFIT writes them (header A-P, objects with toggles, unused 6-8 lines, C0, Z).
FEEDME = """\
===============================================================================
# IMAGE and GALFIT CONTROL PARAMETERS
A) gal.fits            # Input data image (FITS file)
B) imgblock.fits       # Output data image block
C) none                # Sigma image name (made from data if blank or "none")
D) psf.fits   #        # Input PSF image and (optional) diffusion kernel
E) 2                   # PSF fine sampling factor relative to data
F) mask.txt            # Bad pixel mask (FITS image or ASCII coord list)
G) none                # File with parameter constraints (ASCII file)
H) 11   70   21   80   # Image region to fit (xmin xmax ymin ymax)
I) 100    100          # Size of the convolution box (x y)
J) 26.563              # Magnitude photometric zeropoint
K) 0.038  0.038        # Plate scale (dx dy)    [arcsec per pixel]
O) regular             # Display type (regular, curses, both)
P) 0                   # Choose: 0=optimize, 1=model, 2=imgblock, 3=subcomps

# Object number: 1
 0) sersic                 #  object type
 1) 48.5180  51.2800  1 1  #  position x, y
 3) 20.0890     1          #  Integrated magnitude
 4) 5.1160      1          #  R_e (half-light radius)   [pix]
 5) 4.0000      0          #  Sersic index n (de Vaucouleurs n=4)
 6) 0.0000      0          #     -----
 7) 0.0000      0          #     -----
 8) 0.0000      0          #     -----
 9) 0.7570      1          #  axis ratio (b/a)
10) -60.3690    1          #  position angle (PA) [deg: Up=0, Left=90]
 Z) 0                      #  output option (0 = resid., 1 = Don't subtract)

# Object number: 2
 0) expdisk                #  object type
 1) 48.5180  51.2800  0 1  #  position x, y
 3) 19.5000     1          #  Integrated magnitude
 4) 12.000      1          #  R_s (disk scale-length)   [pix]
 9) 0.4000      1          #  axis ratio (b/a)
10) 30.0000     1          #  position angle (PA) [deg: Up=0, Left=90]
C0) -0.3000     1          #  traditional diskyness(-)/boxyness(+)
 Z) 0

# Object number: 3
 0) sersic
 1) 20.0  30.0  1 1
 3) 22.0     1
 4) 2.0      1
 5) 1.0      1
 9) 0.9      1
10) 0.0      1

# Object number: 4
 0) sky                    #  object type
 1) 1.3920      1          #  sky background at center of fitting region [ADUs]
 2) 0.0000      0          #  dsky/dx (sky gradient in x)
 3) 0.0000      0          #  dsky/dy (sky gradient in y)
 Z) 0                      #  output option (0 = resid., 1 = Don't subtract)
"""


def test_feedme_model_init_and_options(tmp_path):
    model, init, opts = read_feedme(_write(tmp_path, "galfit.feedme", FEEDME))
    assert [type(c) for c in model.components] == [Sersic, Exponential, Sersic, FlatSky]
    assert [c.name for c in model.components] == ["sersic", "expdisk", "sersic2", "sky"]
    assert model.components[1].boxy and not model.components[0].boxy
    # toggle 0 -> fixed at the initial value; the unused 6)-8) lines are ignored
    assert model.fixed == {"sersic.n": None, "expdisk.x": None}
    assert init == {"sersic_x": 48.518, "sersic_y": 51.28, "sersic_mag": 20.089, "sersic_r_e": 5.116,
                    "sersic_n": 4.0, "sersic_q": 0.757, "sersic_pa": -60.369,
                    "expdisk_x": 48.518, "expdisk_y": 51.28, "expdisk_mag": 19.5, "expdisk_r_s": 12.0,
                    "expdisk_q": 0.4, "expdisk_pa": 30.0, "expdisk_c0": -0.3,
                    "sersic2_x": 20.0, "sersic2_y": 30.0, "sersic2_mag": 22.0, "sersic2_r_e": 2.0,
                    "sersic2_n": 1.0, "sersic2_q": 0.9, "sersic2_pa": 0.0, "sky_sky": 1.392}
    assert opts["image"] == str(tmp_path / "gal.fits") and opts["psf"] == str(tmp_path / "psf.fits")
    assert opts["mask"] == str(tmp_path / "mask.txt") and opts["sigma"] is None
    assert opts["constraints"] is None
    assert opts["region"] == (11, 70, 21, 80) and opts["psf_oversampling"] == 2
    assert opts["zeropoint"] == 26.563 and opts["plate_scale"] == (0.038, 0.038)
    assert opts["pixel_scale"] == 0.038


def test_feedme_tilted_sky_and_mu0_of_ferrer(tmp_path):
    text = """\
J) 25.0
K) 0.2 0.2
 0) ferrer
 1) 30 30 1 1
 3) 21.0 1      # central surface brightness [mag/arcsec^2]
 4) 30.0 1
 5) 2.0 1
 6) 0.5 0
 9) 0.5 1
10) 30 1
 0) sky
 1) 0.5 1
 2) 0.01 1
 3) 0.0 0
"""
    model, init, _ = read_feedme(_write(tmp_path, "f.feedme", text))
    assert isinstance(model.components[0], Ferrers) and isinstance(model.components[1], TiltedSky)
    assert model.fixed == {"ferrer.beta": None, "sky.dsky_dy": None}
    assert init["sky_dsky_dx"] == 0.01
    # total flux = I0 * 2 pi r_out^2 B(2/(2-beta), alpha+1) / (2-beta) * q, I0 = 10^(-0.4(mu0-zp)) dx dy
    e = 2.0 - 0.5
    flux = 10 ** (-0.4 * (21.0 - 25.0)) * 0.2 ** 2 * 2 * math.pi * 30.0 ** 2 * beta_fn(2 / e, 3.0) / e * 0.5
    assert init["ferrer_mag"] == pytest.approx(25.0 - 2.5 * math.log10(flux), abs=1e-9)


@pytest.mark.parametrize("text, words", [
    ("0) nuker\n1) 1 1 1 1\n", ["bad.feedme:1", "nuker", "supported"]),
    ("0) sersic\n1) 10 10 1 1\n3) 20 2\n", ["bad.feedme:3", "toggle"]),
    ("0) sersic\n1) 10 10 1 1\nF1) 0.1 30 1 1\n", ["bad.feedme:3", "F1"]),
    ("3) 20 1\n", ["bad.feedme:1", "before any"]),
    ("A) gal.fits\n", ["no component"]),
    ("0) sersic\n4) big 1\n", ["bad.feedme:2", "not a number"]),
    ("H) 10 5 1 5\n0) sersic\n", ["bad.feedme:1", "region"]),
])
def test_feedme_errors_name_file_and_line(tmp_path, text, words):
    with pytest.raises(ModelSpecError) as exc:
        read_feedme(_write(tmp_path, "bad.feedme", text))
    for w in words:
        assert w in str(exc.value)


def test_feedme_constraint_file(tmp_path):
    _write(tmp_path, "constraints.txt", """\
# component  parameter  constraint
  1_2        x          offset      # disk keeps its offset from the bulge
  1_2        re         ratio       # (component 2 is a sersic here)
  1          n          0.7 to 5    # absolute range
  2          mag        -1 0.5      # relative to the initial value
""")
    text = """\
G) constraints.txt
0) sersic
1) 20 20 1 1
3) 18 1
4) 3 1
5) 4 0
0) sersic
1) 22 20 0 1
3) 19 1
4) 9 1
5) 1 1
"""
    model, init, opts = read_feedme(_write(tmp_path, "c.feedme", text))
    assert opts["constraints"] == str(tmp_path / "constraints.txt")
    assert model.ties == [Tie("sersic2.x", "sersic.x", offset=2.0), Tie("sersic2.r_e", "sersic.r_e", ratio=3.0)]
    assert model.bounds == {"sersic.n": (0.7, 5.0), "sersic2.mag": (18.0, 19.5)}
    # a tied parameter follows its source even where its own toggle said "fixed"
    assert "sersic2.x" not in model.fixed and model.fixed == {"sersic.n": None}

    _write(tmp_path, "constraints.txt", "3-7  mag  -0.5 0.5\n")
    with pytest.raises(ModelSpecError, match=r"constraints.txt:1.*differences"):
        read_feedme(tmp_path / "c.feedme")
