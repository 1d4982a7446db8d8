"""The aperture curve of growth behind the residual baseline: (R50, R90 inside an aperture)
-> (n, r_e), inverted exactly enough to be a starting point."""

import math

import pytest
import torch

from galmoss_auto.initnet.conventions import _gammaincinv, n_from_concentration
from galmoss_auto.initnet.growth import _b_n, aperture_fraction, sersic_from_aperture_radii


def _aperture_radii(n, r_e, aperture):
    """Radii enclosing 50 % and 90 % of a circular Sérsic's light inside ``aperture`` (exact)."""
    n, r_e = torch.as_tensor(n, dtype=torch.float64), torch.as_tensor(r_e, dtype=torch.float64)
    inside = aperture_fraction(n, aperture / r_e)
    radius = lambda g: r_e * (_gammaincinv(2.0 * n, g) / _b_n(n)) ** n
    return radius(0.5 * inside), radius(0.9 * inside)


def test_aperture_fraction_known_values():
    # half the light inside r_e for every n; nearly all of an exponential inside 10 r_e
    n = torch.tensor([0.5, 1.0, 4.0], dtype=torch.float64)
    assert torch.allclose(aperture_fraction(n, torch.ones(3, dtype=torch.float64)),
                          torch.full((3,), 0.5, dtype=torch.float64), atol=2e-4)
    assert aperture_fraction(torch.tensor(1.0), torch.tensor(10.0)) > 0.999


def test_inversion_recovers_n_and_r_e_also_when_truncated():
    n = torch.tensor([0.4, 0.7, 1.0, 1.5, 2.5, 4.0, 5.5, 1.0, 4.0, 2.0])
    r_e = torch.tensor([1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 4.0, 10.0, 12.0, 16.0])
    r50, r90 = _aperture_radii(n, r_e, 16.0)
    n_fit, r_fit = sersic_from_aperture_radii(r50.float(), r90.float(), 16.0)
    assert torch.all((n_fit / n - 1).abs() < 0.02), n_fit
    assert torch.all((r_fit / r_e - 1).abs() < 0.02), r_fit
    # the untruncated relation underestimates n badly once the aperture cuts the profile
    big = r_e >= 10
    n_untrunc = torch.as_tensor(n_from_concentration((r90 / r50).numpy()))
    assert torch.all(n_untrunc[big] < 0.8 * n[big])


def test_inversion_clips_and_checks_its_inputs():
    n_fit, _ = sersic_from_aperture_radii(torch.tensor([2.0, 2.0]), torch.tensor([2.05, 30.0]), 16.0)
    assert n_fit[0] == pytest.approx(0.3, rel=1e-3) and n_fit[1] == pytest.approx(6.0, rel=1e-3)
    with pytest.raises(ValueError, match="aperture"):
        sersic_from_aperture_radii(torch.ones(1), torch.full((1,), 2.0), 0.0)
