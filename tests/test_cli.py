"""The ``galmoss-auto`` command line: subcommands exist, errors are clear and exit 2."""

import pytest

from galmoss_auto.pipelines.cli import build_parser, main


def test_subcommands_registered(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("run", "demo", "simulate", "fit"):
        assert name in out
    args = build_parser().parse_args(["run", "cutouts/", "--out", "o", "--mask", "none", "--workers", "0"])
    assert (args.input, args.out, args.mask, args.init, args.workers) == ("cutouts/", "o", "none", "auto", 0)
    assert (args.sky, args.weights, args.strict, args.zoo) == ("flat", [], False, None)


def test_run_bad_input_names_it_and_leaves_no_output(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "missing_dir"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing_dir: no such file, directory or glob match" in err
    assert not out.exists()


def test_run_bad_option_range(tmp_path, capsys):
    assert main(["run", str(tmp_path), "--out", str(tmp_path / "o"), "--chunk-size", "0"]) == 2
    assert "chunk_size must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_whole_job(tmp_path, capsys):
    pytest.importorskip("galsim")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n", "4", "--workers", "0", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"catalog: {out / 'catalog.fits'}" in printed and f"figure: {out / 'recovery.png'}" in printed
    from astropy.table import Table
    cat = Table.read(out / "catalog.ecsv")
    assert len(cat) == 4 and (out / "recovery.png").stat().st_size > 10_000
    assert len(list((out / "panels").glob("*.png"))) == 4
