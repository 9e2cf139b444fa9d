"""What a newcomer meets in the first hour: the demo at any size, errors and warnings
from a plain script, typos in options, a folder of two products, outputs that cannot
be written, and the same words from every command."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import run_cli

from fficube.cli import _parser


@pytest.mark.parametrize("n_ffis", [1, 2, 100])
def test_the_demo_builds_any_number_of_ffis(n_ffis: int, tmp_path: Path) -> None:
    code, out, err = run_cli("demo", str(tmp_path / "demo"), "--n-ffis", str(n_ffis))
    assert code == 0, err
    assert f"from {n_ffis} FFIs" in out and "FFIs  " in out  # the summary, then inspect's table
    if n_ffis == 100:  # a cube larger than the old fixed 1.5 MB streams in several blocks
        summary = next(line for line in out.splitlines() if line.startswith("wrote "))
        assert int(summary.split(" block(s)")[0].rsplit(" ", 1)[1]) > 1, summary


def test_the_demo_takes_a_budget_and_refuses_no_ffis(tmp_path: Path, capsys) -> None:
    code, out, err = run_cli("demo", str(tmp_path / "demo"), "--n-ffis", "30", "--max-memory", "2MB")
    assert code == 0 and "--max-memory 2MB" in out, err
    with pytest.raises(SystemExit) as exit_:
        run_cli("demo", str(tmp_path / "none"), "--n-ffis", "0")
    assert exit_.value.code == 2
    assert "--n-ffis: expected 1 or more, got 0" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def run_script(source: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = cwd / "user_script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_an_error_in_a_script_shows_only_itself(tmp_path: Path) -> None:
    done = run_script("""
        import fficube
        fficube.make_cube(["missing_ffic.fits"], "cube.fits")
    """, tmp_path)
    assert done.returncode == 1
    assert "fficube.errors.InputError: missing_ffic.fits: no such file or directory" in done.stderr
    assert "no running event loop" not in done.stderr and "During handling" not in done.stderr, done.stderr


def test_a_warning_in_a_script_points_at_the_users_line(sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=3, shape=(16, 20), no_wcs=())
    done = run_script(f"""
        import fficube
        paths = {paths!r}
        fficube.make_cube(paths + paths[:1], "cube.fits")  # line 4
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{tmp_path / 'user_script.py'}:4: DuplicateInputWarning" in done.stderr, done.stderr
    assert "asyncio" not in done.stderr


def test_warnings_made_errors_still_stop_a_sync_call(sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=3, shape=(16, 20), no_wcs=())
    done = run_script(f"""
        import warnings, fficube
        warnings.simplefilter("error", fficube.DuplicateInputWarning)
        paths = {paths!r}
        try:
            fficube.make_cube(paths + paths[:1], "cube.fits")
        except fficube.DuplicateInputWarning as w:
            print("stopped:", w)
    """, tmp_path)
    assert done.returncode == 0 and "stopped:" in done.stdout and "given more than once" in done.stdout, done.stderr
    assert not (tmp_path / "cube.fits").exists()


def test_abbreviated_options_are_refused(sector, tmp_path: Path, capsys) -> None:
    paths = sector(n_ffis=3, shape=(16, 20), no_wcs=())
    cube = tmp_path / "cube.fits"
    cube.write_bytes(b"the user's own file")
    with pytest.raises(SystemExit) as exit_:
        run_cli("build", *paths, "-o", str(cube), "--overwrit")
    assert exit_.value.code == 2 and "unrecognized arguments: --overwrit" in capsys.readouterr().err
    assert cube.read_bytes() == b"the user's own file"
    # Every command refuses them, whichever module registers it.
    subparsers = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert _parser().allow_abbrev is False
    assert {name: p.allow_abbrev for name, p in subparsers.choices.items()} == dict.fromkeys(subparsers.choices, False)


@pytest.fixture
def two_products(sector, tmp_path: Path) -> tuple[Path, list[str], list[str]]:
    """A folder with 3 SPOC and 2 TICA FFIs."""
    spoc = sector(n_ffis=3, shape=(16, 20), no_wcs=())
    tica = sector(n_ffis=2, product="tica", sector=27, shape=(16, 20), no_wcs=())
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in spoc + tica:
        shutil.copy(path, folder)
    return folder, spoc, tica


def test_an_explicit_product_says_what_it_leaves_out(two_products, tmp_path: Path) -> None:
    folder, _, _ = two_products

    def build(output: str, *extra: str) -> subprocess.CompletedProcess[str]:  # warnings as printed
        return subprocess.run([sys.executable, "-m", "fficube.cli", "build", str(folder), "-o", str(tmp_path / output),
                               *extra], capture_output=True, text=True, timeout=120)

    done = build("c.fits", "--product", "spoc")
    assert done.returncode == 0, done.stderr
    assert (f"fficube: warning: {folder}: 2 TICA FFI(s) (*_img.fits) left out: only SPOC FFIs (*ffic.fits) "
            "were asked for") in done.stderr
    assert "from 3 FFIs" in done.stdout
    done = build("q.fits", "--product", "spoc", "-q")
    assert done.returncode == 0 and done.stderr == "" and done.stdout == ""
    done = build("a.fits")  # auto refuses the mix
    assert done.returncode == 1 and "their products differ" in done.stderr, done.stderr


def test_an_explicit_product_says_what_it_leaves_out_under_a_prefix(two_products, s3, tmp_path: Path) -> None:
    import fficube

    folder, _, _ = two_products
    s3.upload(sorted(str(p) for p in folder.iterdir()), "mixed")
    with pytest.warns(fficube.LeftOutInputWarning, match="mixed/: 2 TICA FFI.s. .*left out"):
        fficube.make_cube(f"s3://{s3.bucket}/mixed/", tmp_path / "c.fits", product="spoc",
                          storage_options=s3.options)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_an_output_that_cannot_be_written_is_one_line_naming_it(sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=2, shape=(16, 20), no_wcs=())
    code, _out, err = run_cli("build", *paths, "-o", "/proc/x.fits")
    assert code == 1
    assert err.splitlines() == ["fficube: error: /proc/x.fits: cannot write here: no such file or directory"], err


@pytest.mark.parametrize("command", [["inspect"], ["verify"], ["plot", "-o", "x.png"], ["refs", "-o", "x.json"]])
def test_every_command_names_a_missing_cube_as_given(command: list[str], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(command[0], "nothere.fits", *command[1:])
    assert code == 1
    assert "nothere.fits: no such file or directory" in out + err
    assert str(tmp_path) not in out + err
    code, out, err = run_cli("build", "nothere.fits", "-o", "c.fits")
    assert err == "fficube: error: nothere.fits: no such file or directory\n"
