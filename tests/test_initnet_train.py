"""initnet training and inference: a step lowers the loss, Lightning over simulated shards,
save -> load through the zoo gives identical predictions, batch = one by one, the sep fallback."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from galmoss_auto.fitting.flags import Flag
from galmoss_auto.initnet.base import PARAMS, get_initializer
from galmoss_auto.initnet.data import collate
from galmoss_auto.initnet.lightning import build_datamodule, build_module, dihedral, export
from galmoss_auto.initnet.predict import InitNetInitializer

sys.path.insert(0, str(Path(__file__).parent))
from initnet_helpers import TINY, make_galaxies


def _module(seed=0, **kw):
    torch.manual_seed(seed)
    return build_module(**{**TINY, **kw})


def test_training_steps_lower_the_loss():
    _, _, items = make_galaxies(n=8, size=40, seed=1)
    batch = collate(items)
    module = _module(augment=False)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    module.train()
    losses = []
    for _ in range(6):
        inputs, target = module.prepare(batch)
        mean, log_sigma = module(inputs)
        loss, _ = module.loss(mean, log_sigma, target, inputs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0], losses


def test_dihedral_keeps_the_truth_consistent():
    from galmoss_auto.initnet.loss import chi2_nu
    _, _, items = make_galaxies(n=4, size=40, seed=2)
    batch = collate(items)
    module = _module()
    for flips in [(1, 0, 0), (0, 1, 1), (1, 1, 1)]:
        inputs, target = module.prepare(dihedral(batch, *flips))
        c = chi2_nu(target, inputs)
        assert torch.all((c > 0.8) & (c < 1.25)), (flips, c)


def test_save_load_identical_batch_equals_one_by_one(tmp_path):
    cutouts, _, _ = make_galaxies(n=6, size=40, seed=3)
    module = _module(seed=1)
    module.eval()
    path = export(module, tmp_path / "zoo", survey="sdss", bands=["r"], training={"seed": 1},
                  evaluation={"initnet_sigma_mag": 0.1}, dtype=None)
    reg = json.loads((tmp_path / "zoo" / "registry.json").read_text())
    entry = next(e for e in reg["entries"] if e["name"] == "initnet-sdss-compact-v1")
    assert entry["stage"] == "initnet" and entry["sha256"] and entry["input"]["crop"] == 32
    direct = InitNetInitializer.from_module(module)
    loaded = get_initializer("initnet", checkpoint=str(path), sha256=entry["sha256"])
    v0, e0, ok0, _ = direct.predict(cutouts, "cpu")
    v1, e1, ok1, _ = loaded.predict(cutouts, "cpu")
    for p in PARAMS:
        np.testing.assert_array_equal(v0[p], v1[p])
        np.testing.assert_array_equal(e0[p], e1[p])
    batch = loaded.init_batch(cutouts, torch.device("cpu"))
    singles = [loaded.init_batch([c], torch.device("cpu"))[0] for c in cutouts]
    for b, s in zip(batch, singles):
        for p in PARAMS:
            assert b.params[p] == pytest.approx(s.params[p], rel=1e-5, abs=1e-5)
        assert b.columns["init_method"] == s.columns["init_method"]
    # float16 storage (what the zoo ships): same predictions to fp16 precision
    p16 = export(module, tmp_path / "zoo16", survey="sdss", bands=["r"], training={}, evaluation={})
    v2, _, _, _ = get_initializer("initnet", checkpoint=str(p16)).predict(cutouts, "cpu")
    np.testing.assert_allclose(v2["mag"], v0["mag"], atol=0.02)
    # a corrupted file is refused
    bad = tmp_path / "bad.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(Exception, match="sha256|hash|checksum|Checksum"):
        get_initializer("initnet", checkpoint=str(bad), sha256=entry["sha256"])


def test_results_carry_method_and_errors():
    cutouts, _, _ = make_galaxies(n=3, size=40, seed=4)
    init = InitNetInitializer.from_module(_module())
    for r in init.init_batch(cutouts, torch.device("cpu")):
        method = r.columns["init_method"]
        assert method in ("initnet", "sep")
        if method == "initnet":
            assert r.flags == 0
            assert all(np.isfinite(r.columns[f"init_sersic_{p}_err"]) for p in PARAMS)
            assert 0.05 <= r.params["q"] <= 1.0 and -90 < r.params["pa"] <= 90


def test_unphysical_prediction_falls_back_to_sep_with_flag():
    cutouts, truth, _ = make_galaxies(n=3, size=40, seed=5)
    module = _module()
    with torch.no_grad():
        module.net.head[-1].bias[3] = 100.0      # log10 r_e far outside the physical range
    init = InitNetInitializer.from_module(module)
    results = init.init_batch(cutouts, torch.device("cpu"))
    for r, x in zip(results, truth["x"]):
        assert r.flags & Flag.INIT_FALLBACK
        assert r.columns["init_method"] == "sep"
        assert np.isnan(r.columns["init_sersic_r_e_err"])
        assert abs(r.params["x"] - x) < 1.5               # sep's own start is used


def test_lightning_fit_on_simulated_shards(tmp_path):
    pytest.importorskip("galsim")
    import lightning as L
    from galmoss_auto.data_scripts.simulate import simulate
    from galmoss_auto.initnet.lightning import evaluate

    simulate("sdss", "r", n=12, seed=7, out=tmp_path / "sim", size=32, workers=1, fits=False,
             progress=False, shard_size=6)
    dm = build_datamodule(tmp_path / "sim", tmp_path / "sim", batch_size=6, seed=0)
    module = _module()
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
                        deterministic=True)
    trainer.fit(module, dm)
    assert trainer.global_step == 2
    ev = evaluate(module, tmp_path / "sim")
    assert ev["n"] >= 1 and "sep_sigma_mag" in ev and "initnet_sigma_log_re" in ev
    assert 0.0 <= ev["fallback_fraction"] <= 1.0


def test_datamodule_rejects_bad_options(tmp_path):
    with pytest.raises(ValueError, match="train_dir"):
        build_datamodule(None, None)
    with pytest.raises(ValueError, match="together"):
        build_datamodule(tmp_path, None, real=[1])
    with pytest.raises(ValueError, match="unknown initnet setting"):
        build_module(bogus=1)


def test_evaluation_leaves_out_a_central_buried_under_neighbours(monkeypatch):
    """A held-out cutout whose every pixel is masked cannot be scored; it must not stop the
    evaluation (it stopped `train --survey hsc` once, after the training)."""
    import numpy as np
    import torch
    from galmoss_auto.initnet import evaluate as ev

    def item(i, masked):
        img = torch.ones(16, 16)
        return {"id": f"g{i}", "image": img, "sigma": torch.ones(16, 16), "psf": torch.ones(3, 3) / 9,
                "mask": torch.full((16, 16), masked), "zeropoint": 25.0, "pixel_scale": 0.2,
                "target": {k: 1.0 for k in ev.TARGET_KEYS}}
    monkeypatch.setattr(ev, "SimItems", lambda d, limit=None: [item(0, False), item(1, True)])
    cutouts, truth = ev.load_sim("sim")
    assert [c.id for c in cutouts] == ["g0"] and all(len(v) == 1 for v in truth.values())
    monkeypatch.setattr(ev, "SimItems", lambda d, limit=None: [item(1, True)])
    with pytest.raises(ValueError, match="valid pixel"):
        ev.load_sim("sim")
    assert np.isfinite(truth["mag"]).all()


def test_start_metrics_score_n_also_in_dex():
    """A start biased low by a factor 2 with 40 % noise: its fractional n scatter is halved by
    the bias, its log_n scatter is not."""
    from galmoss_auto.initnet.evaluate import start_metrics
    rng = np.random.default_rng(0)
    n_true = rng.uniform(0.5, 4.0, 4000)
    truth = {"x": np.zeros(4000), "y": np.zeros(4000), "mag": np.zeros(4000), "r_e": np.ones(4000),
             "n": n_true, "q": np.full(4000, 0.5), "pa": np.zeros(4000)}
    noise = 10 ** rng.normal(0, 0.4 / np.log(10), 4000)        # ~40 % multiplicative scatter
    pred = dict(truth, n=0.5 * n_true * noise)
    m = start_metrics(pred, truth, np.full(4000, 30.0), "s")
    assert m["s_bias_log_n"] == pytest.approx(np.log10(0.5), abs=0.01)
    assert m["s_sigma_log_n"] == pytest.approx(0.4 / np.log(10), rel=0.08)
    assert m["s_sigma_n"] < 0.6 * 0.4                           # the fractional metric is fooled
    assert m["s_sigma_log_n_snr20-50"] == pytest.approx(m["s_sigma_log_n"])
