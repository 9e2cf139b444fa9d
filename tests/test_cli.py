"""The fficube command: exit codes, one-line errors, progress and summary."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from astropy.io import fits
from cube_compare import assert_verifies
from helpers import run_cli as run

import fficube
from fficube.cli import error_text, flag, in_cli_words, main
from fficube.errors import InputError, MemoryBudgetError, OptionError, OutputExistsError


@pytest.fixture
def paths(sector):
    return sector(n_ffis=5, shape=(30, 36), no_wcs=(0,))


def test_build_prints_progress_and_summary(paths, tmp_path: Path) -> None:
    out_file = tmp_path / "cube.fits"
    code, out, err = run("build", *paths, "-o", str(out_file), "--sector", "1", "--max-memory", "200kB")
    assert code == 0
    assert out.startswith(f"wrote {out_file}: SPOC cube 30x36x5x2") and "from 5 FFIs" in out
    assert "scan  [" in err and "5/5 files" in err and "blocks" in err
    assert fits.getheader(out_file)["SECTOR"] == 1


def test_quiet_build_prints_nothing(paths, tmp_path: Path) -> None:
    assert run("build", *paths, "-o", str(tmp_path / "c.fits"), "--quiet") == (0, "", "")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-memory", "1kB"], "fficube: error: --max-memory 1.0 kB cannot hold one row"),
        (["--max-memory", "lots"], "fficube: error: --max-memory: not a size: 'lots'"),
        (["--product", "tica"], "this is a SPOC FFI, not TICA"),
    ],
)
def test_errors_are_one_line(paths, tmp_path: Path, args: list[str], message: str) -> None:
    code, out, err = run("build", *paths, "-o", str(tmp_path / "c.fits"), "--quiet", *args)
    assert code == 1 and out == ""
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "c.fits").exists()


def test_existing_output_and_bad_file(paths, tmp_path: Path) -> None:
    out_file = tmp_path / "c.fits"
    out_file.write_text("mine")
    code, _, err = run("build", *paths, "-o", str(out_file), "-q")
    assert code == 1 and f"{out_file}: already exists; use --overwrite" in err
    assert out_file.read_text() == "mine"
    junk = tmp_path / "junk-s_ffic.fits"
    junk.write_text("not fits at all" * 300)
    code, _, err = run("build", *paths, str(junk), "-o", str(tmp_path / "d.fits"), "-q")
    assert code == 1 and f"{junk}: not a FITS file" in err


def test_debug_shows_the_traceback(paths, tmp_path: Path) -> None:
    code, _, err = run("--debug", "build", *paths, "-o", str(tmp_path / "c.fits"), "--max-memory", "1kB")
    assert code == 1 and "Traceback (most recent call last)" in err and "MemoryBudgetError" in err
    assert err.rstrip().splitlines()[-1].startswith("fficube: error: --max-memory 1.0 kB cannot hold one row")


def test_inspect(paths, tmp_path: Path) -> None:
    cube = tmp_path / "c.fits"
    assert run("build", *paths, "-o", str(cube), "-q", "--sector", "1")[0] == 0
    code, out, _ = run("inspect", str(cube))
    assert code == 0
    lines = dict(line.split(None, 1) if not line.strip().startswith("camera") else ("camera/CCD", line.split()[-1])
                 for line in out.strip().splitlines())
    assert "30 rows x 36 cols x 5 FFIs x 2 layer(s)" in out
    assert lines["sector"].strip() == "1" and lines["camera/CCD"] == "1/1"
    assert lines["product"].strip() == "SPOC" and lines["FFIs"].strip() == "5"
    code, _, err = run("inspect", paths[0])
    assert code == 1 and "not a 4-D float32 image: not an FFI cube" in err


def test_demo_in_a_subprocess(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fficube.cli", "demo", str(tmp_path / "demo"), "--n-ffis", "8"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    cube = tmp_path / "demo" / "tess-s0001-1-1-cube.fits"
    assert cube.exists() and f"wrote {cube}" in done.stdout and "template" in done.stdout
    with fits.open(cube) as hdus:
        assert hdus[1].data.shape == (96, 120, 8, 2) and len(hdus[2].data) == 8
    assert len(os.listdir(tmp_path / "demo" / "ffis")) == 8


def test_usage_error_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["build"])
    assert info.value.code == 2


def test_build_from_s3_with_cli_options(s3, paths, tmp_path: Path) -> None:
    urls = s3.upload(paths, "cli")
    out = tmp_path / "c.fits"
    code, text, err = run("build", f"s3://{s3.bucket}/cli/", "-o", str(out),
                          "--storage-option", f"endpoint_url={s3.url}", "--storage-option", "default_block_size=1048576")
    assert code == 0, err
    assert "from 5 FFIs" in text and "retried" in text
    cube_url = f"s3://{s3.bucket}/cubes/c.fits"
    s3.client.upload_file(str(out), s3.bucket, "cubes/c.fits")
    code, local, _ = run("inspect", str(out))
    code2, remote, err = run("inspect", cube_url, "--storage-option", f"endpoint_url={s3.url}")
    assert code == code2 == 0, err
    assert local.replace(str(out), "X") == remote.replace(cube_url, "X") and "5 FFIs" in remote
    code, _, err = run("build", f"s3://{s3.bucket}/cli/nothing-*.fits", "-o", str(tmp_path / "d.fits"),
                       "--storage-option", f"endpoint_url={s3.url}")
    assert code == 1 and "the pattern matches no object" in err and urls
    with pytest.raises(SystemExit) as info:
        run("build", "x.fits", "-o", "y.fits", "--storage-option", "novalue")
    assert info.value.code == 2


@pytest.mark.parametrize("sig, code, words", [("SIGTERM", 143, "stopped by SIGTERM"), ("SIGINT", 130, "interrupted")])
@pytest.mark.parametrize("point", ["before-any-block", "mid-build"])
def test_signals_stop_a_build_cleanly(sector, tmp_path: Path, sig: str, code: int, words: str, point: str) -> None:
    import signal

    from faults import start_to_stop, wait_stopped

    paths = sector(n_ffis=16, shape=(200, 300), no_wcs=())
    out = tmp_path / "c.fits"
    journal, partial = Path(f"{out}.journal"), Path(f"{out}.partial")
    build = [sys.executable, "-m", "fficube.cli", "build", *paths, "-o", str(out)]
    # The build stops itself (SIGSTOP) inside a write, gets the signal, and goes on: the
    # signal lands there, however fast the build is.  In the headers, nothing is saved
    # yet; in the middle of the data (block 7 of 12), the first blocks' flush has begun.
    spec = {"at": "write", "offset": 100 if point == "before-any-block" else 4_000_000}
    proc = start_to_stop([*build, "--max-memory", "2MB", "-q"], tmp_path, spec)
    try:
        wait_stopped(proc)
        proc.send_signal(getattr(signal, sig))
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert words in err and "Traceback" not in err
    assert not out.exists()
    if point == "before-any-block":  # nothing saved: nothing kept
        assert "no partial output was left" in err
        assert not partial.exists() and not journal.exists()
    else:
        assert "run the same command with --resume" in err
        assert partial.exists() and journal.exists()
    done = subprocess.run([*build, "--max-memory", "20MB", "--resume"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("resumed with" in done.stdout) == (point == "mid-build")
    assert not journal.exists() and not partial.exists()
    assert_verifies(out)


def test_an_option_error_is_told_by_its_flag(tmp_path: Path) -> None:
    # The library names the option by its keyword; the command line by its flag.
    from fficube.sectors.shard import parse_shard

    with pytest.raises(OptionError) as refused:
        parse_shard("3/2")
    assert refused.value.option == "shard" and "--" not in str(refused.value)
    code, out, err = run("sector", "7", "--source", str(tmp_path / "ffis"), "--dest", str(tmp_path / "cubes"),
                         "--camera", "1", "--ccd", "1", "--shard", "3/2")
    assert (code, out, err) == (1, "", "fficube: error: --shard: '3/2' is not K/N with 1 <= K <= N (K = 3)\n")
    assert error_text(OptionError("storage_options", "no such profile")) == "--storage-option: no such profile"
    assert error_text(OptionError("coordinates", "not a position")) == "coordinates: not a position"  # Python only


def test_every_option_error_of_the_library_has_a_flag_or_is_python_only() -> None:
    named = {node.args[0].value
             for path in Path(fficube.__file__).parent.rglob("*.py")
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "OptionError"
             and node.args and isinstance(node.args[0], ast.Constant)}
    assert {"max_memory", "storage_options", "stage", "size"} <= named
    assert {option for option in named if flag(option) is None} == {"coordinates", "names", "file_names"}


def test_an_error_names_the_options_the_command_line_translates() -> None:
    exists = OutputExistsError("already exists; use overwrite=True to replace it", path="c.fits")
    assert exists.options == ("overwrite",)
    assert error_text(exists) == "c.fits: already exists; use --overwrite to replace it"
    assert error_text(MemoryBudgetError("max_memory = 1.0 kB cannot hold one row")) == \
        "--max-memory 1.0 kB cannot hold one row"
    # Text the error does not name as an option is the user's or the file's: left as it is.
    assert error_text(InputError("resume=True is part of this file name", path="x")) == \
        "x: resume=True is part of this file name"
    assert in_cli_words("kept it: run again with resume=True, or restart=True", ("resume", "restart")) == \
        "kept it: run again with --resume, or --restart"
