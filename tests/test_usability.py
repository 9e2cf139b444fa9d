"""A new user's first hour: messages in the words of the interface used, help, notebooks, locks.

Each test is one surprise a user met (issue 14); the README's sample output is
produced here, so that it cannot drift from what fficube prints.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cube_compare import assert_verifies
from helpers import run_cli, without_build_stamps

import fficube
from fficube.cli import _parser

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def paths(sector) -> list[str]:
    return sector(n_ffis=5, shape=(30, 36), no_wcs=(0,))


# ----------------------------------------------------------------------------------
# Messages, help, usage


def test_cli_errors_name_flags_and_the_api_names_keywords(paths, tmp_path: Path) -> None:
    out = tmp_path / "c.fits"
    out.write_bytes(b"already here")
    code, _, err = run_cli("build", *paths, "-o", str(out), "-q")
    assert code == 1 and "already exists; use --overwrite to replace it" in err and "=True" not in err
    with pytest.raises(fficube.OutputExistsError, match="use overwrite=True to replace it"):
        fficube.make_cube(paths, out)
    code, _, err = run_cli("build", *paths, "-o", str(tmp_path / "d.fits"), "--max-memory", "1kB")
    assert code == 1 and "--max-memory 1.0 kB cannot hold one row" in err and "max_memory" not in err


@pytest.mark.parametrize(
    ("options", "name"),
    [({"max_memory": "lots"}, "max_memory"), ({"product": "kepler"}, "product"), ({"concurrency": 0}, "concurrency"),
     ({"concurrency": "8"}, "concurrency"), ({"resume": True, "restart": True}, "resume")],
)
def test_bad_options_are_fficube_errors_naming_the_option(paths, tmp_path: Path, options: dict, name: str) -> None:
    with pytest.raises(fficube.OptionError, match=f"^{name}: ") as info:
        fficube.make_cube(paths, tmp_path / "c.fits", **options)
    assert isinstance(info.value, ValueError) and info.value.option == name
    assert not (tmp_path / "c.fits").exists()


def test_a_mistyped_option_shows_the_subcommands_usage(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        fficube.cli.main(["build", "a.fits", "-o", "c.fits", "--max-memroy", "3GB"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("usage: fficube build ") and "unrecognized arguments: --max-memroy" in err


def test_every_option_has_help_and_shows_its_default() -> None:
    parser = _parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    for name, sub in commands.choices.items():
        text = re.sub(r"\s+", " ", sub.format_help())
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            if action.default not in (None, False, [], {}, "==SUPPRESS=="):
                assert f"(default: {action.default})" in text or \
                    "%(default)" in action.help, f"{name} {action.dest}: default not shown"
    assert "(default: 4GB)" in commands.choices["build"].format_help()


@pytest.mark.parametrize("page", ["README.md", "docs/cli.md"])
def test_readme_sample_output_is_what_fficube_prints(page: str, tmp_path: Path, monkeypatch) -> None:
    """The sample build shown in the README (and in the command line's page), after
    ``make demo``, prints what fficube prints."""
    text = (ROOT / page).read_text()
    block = re.search(r"```\n\$ (fficube build .*?)\n(.*?)```", text, re.S)
    assert block, f"the sample build of {page}"
    command, shown = block.group(1), block.group(2).splitlines()
    monkeypatch.chdir(tmp_path)
    assert run_cli("demo", "demo")[0] == 0  # what make demo runs
    code, out, err = run_cli(*shlex.split(command)[1:])
    assert code == 0, err
    printed = [line for line in err.splitlines() if line.startswith(("scan ", "build ")) and "] " in line]
    final = [next(line for line in reversed(printed) if line.startswith(stage)) for stage in ("scan ", "build ")]

    def steady(line: str) -> str:  # what varies from run to run: times and rates
        line = re.sub(r"\d+(\.\d+)? ([kMG]?B)/s", r"N \2/s", line)
        return re.sub(r"in \d+\.\d s", "in N s", re.sub(r"ETA \d+:\d\d", "ETA", line))

    assert [steady(x) for x in shown] == [steady(x) for x in [*final, *out.splitlines()]]


# ----------------------------------------------------------------------------------
# Inputs


def test_a_directory_is_searched_recursively_like_a_prefix(sector, tmp_path: Path) -> None:
    nested = tmp_path / "archive" / "s0001" / "2018" / "206" / "1-1"
    nested.mkdir(parents=True)
    for path in sector(n_ffis=4, shape=(20, 24), no_wcs=()):
        os.replace(path, nested / Path(path).name)
    (tmp_path / "archive" / "notes.txt").write_text("not an FFI")
    result = fficube.make_cube(tmp_path / "archive", tmp_path / "c.fits")
    assert result.n_ffis == 4


class _Forbidden(BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self.send_response(403)
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def forbidden() -> Iterator[str]:
    """``host:port`` of an HTTP server on 127.0.0.1 that answers 403 to everything."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_access_denied_is_not_reported_as_not_found(forbidden: str, tmp_path: Path) -> None:
    url = f"http://{forbidden}/tess/a_ffic.fits"
    with pytest.raises(fficube.InputError) as info:
        fficube.make_cube([url], tmp_path / "c.fits")
    code, _, err = run_cli("build", url, "-o", str(tmp_path / "c.fits"))
    message = str(info.value)
    assert "access denied (HTTP 403)" in message and "no such object" not in message
    assert "anon=True" in message and "requester_pays" in message
    assert code == 1 and "--anon" in err and "--storage-option requester_pays=true" in err


def test_update_warns_once_for_ffis_already_in_the_cube(sector, tmp_path: Path) -> None:
    paths = sorted(sector(n_ffis=8, shape=(20, 24), no_wcs=()))
    cube = tmp_path / "cube.fits"
    fficube.make_cube(paths[:6], cube)

    def update(*extra: str) -> subprocess.CompletedProcess[str]:  # a process of its own: warnings as printed
        return subprocess.run([sys.executable, "-m", "fficube.cli", "update", str(cube), *paths, *extra],
                              capture_output=True, text=True, timeout=120)

    done = update()
    assert done.returncode == 0 and done.stderr.count("already in the cube") == 1
    assert "fficube: warning: 6 FFI(s) already in the cube, skipped: " in done.stderr
    fficube.make_cube(paths[:6], cube, overwrite=True)
    done = update("-q")
    assert done.returncode == 0 and done.stderr == ""


# ----------------------------------------------------------------------------------
# Resume, locks


def test_resume_of_a_complete_cube_checks_it_and_does_nothing(paths, tmp_path: Path) -> None:
    out = tmp_path / "c.fits"
    assert run_cli("build", *paths, "-o", str(out), "-q")[0] == 0
    before = out.read_bytes()
    code, text, err = run_cli("build", *paths, "-o", str(out), "--resume")
    assert code == 0, err
    assert "already complete, nothing to do" in text and out.read_bytes() == before
    result = fficube.make_cube(paths, out, resume=True)
    assert result.already_complete and result.bytes_written == 0 and result.cube_bytes == len(before)
    # Asked for another sector than the cube's: not "already complete" (its headers would differ), refused.
    code, _, err = run_cli("build", *paths, "-o", str(out), "--resume", "--sector", "2")
    assert code == 1 and "a cube without a sector (sector 2 given)" in err and out.read_bytes() == before
    one = tmp_path / "s1.fits"
    fficube.make_cube(paths, one, sector=1)
    assert fficube.make_cube(paths, one, resume=True, sector=1).already_complete  # its own sector
    code, _, err = run_cli("build", *paths, "-o", str(one), "--resume", "--sector", "2")
    assert code == 1 and "a cube of sector 1 (sector 2 given)" in err
    # Not the cube of these FFIs, or not complete: refused, nothing touched.
    code, _, err = run_cli("build", *paths[:4], "-o", str(out), "--resume")
    assert code == 1 and "a cube of other FFIs" in err and out.read_bytes() == before
    out.write_bytes(before[: len(before) - 2880])
    code, _, err = run_cli("build", *paths, "-o", str(out), "--resume")
    assert code == 1 and "not a complete cube" in err and "--overwrite" in err


LOCK_HOLDER = textwrap.dedent(
    """
    import sys, time
    import fficube

    def hold(progress):  # stop in the middle of the build, where the lock is held
        if progress.stage == "write" and progress.done == 1:
            print("holding", flush=True)
            time.sleep(600)

    fficube.make_cube(sys.argv[1:-1], sys.argv[-1], max_memory="125kB", progress=hold)
    """
)


def test_a_second_build_of_one_output_is_refused_while_the_first_runs(paths, tmp_path: Path) -> None:
    out = tmp_path / "c.fits"
    with subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, *paths, str(out)], stdout=subprocess.PIPE,
                          text=True) as first:
        try:
            assert first.stdout is not None and first.stdout.readline().strip() == "holding"
            for extra in ([], ["--resume"], ["--restart"]):
                code, _, err = run_cli("build", *paths, "-o", str(out), *extra)
                assert code == 1 and f"another fficube process (pid {first.pid}) is building this cube" in err, err
            assert Path(f"{out}.partial").exists()  # the first build's work is untouched
        finally:
            first.kill()  # SIGKILL: the lock dies with the process
            first.wait()
    code, _, err = run_cli("build", *paths, "-o", str(out), "--resume", "-q")
    assert code == 0, err
    assert_verifies(out)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("c.fits")) == ["c.fits"]


# ----------------------------------------------------------------------------------
# Notebooks: the sync API from a thread whose event loop is running


async def test_sync_twins_work_inside_a_running_loop_with_progress(paths, tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []
    result = fficube.make_cube(paths, tmp_path / "c.fits", max_memory="125kB",
                               progress=lambda p: seen.append((p.stage, p.done)))
    assert result.blocks > 2 and ("write", result.blocks) in seen and seen[0][0] == "scan"
    verified = fficube.sync.verify_cube(tmp_path / "c.fits")
    assert verified.ok
    reference = tmp_path / "ref.fits"
    await fficube.build_cube(paths, reference, max_memory="125kB")
    assert without_build_stamps((tmp_path / "c.fits").read_bytes()) == without_build_stamps(reference.read_bytes())


def test_a_sync_twin_called_from_a_running_build_is_refused(paths, tmp_path: Path) -> None:
    def nested(progress: fficube.Progress) -> None:
        if progress.stage == "write" and progress.done == 1:
            fficube.make_cube(paths, tmp_path / "inner.fits")

    async def cell() -> None:
        fficube.make_cube(paths, tmp_path / "outer.fits", max_memory="125kB", progress=nested)

    with pytest.raises(fficube.EventLoopError, match="from inside a running fficube call"):
        asyncio.run(cell())


NOTEBOOK_CELL = textwrap.dedent(
    """
    import asyncio, signal, sys, threading, time
    import fficube

    # A kernel turns SIGINT into KeyboardInterrupt whatever it inherited: a child of a
    # background job (a CI script's `cmd &`) starts with SIGINT ignored, and Python then
    # installs no handler of its own.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def slow(progress):  # a build that is still running when the interrupt comes
        if progress.stage == "write" and progress.done >= 1:
            if progress.done == 1:
                print("running", flush=True)
            time.sleep(0.2)

    async def cell():  # the kernel's loop is running, as in Jupyter
        fficube.make_cube(sys.argv[1:-1], sys.argv[-1], max_memory="125kB", progress=slow)

    loop = asyncio.new_event_loop()  # a loop with no SIGINT handler of its own, as ipykernel's
    try:
        loop.run_until_complete(cell())
    except KeyboardInterrupt:
        alive = [t.name for t in threading.enumerate() if t.name.startswith("fficube-sync")]
        print("interrupted", alive, flush=True)
    """
)


def test_ctrl_c_in_a_notebook_cell_cancels_the_build_cleanly(paths, tmp_path: Path) -> None:
    out = tmp_path / "c.fits"
    cell = subprocess.Popen([sys.executable, "-c", NOTEBOOK_CELL, *paths, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert cell.stdout is not None and cell.stdout.readline().strip() == "running"
    cell.send_signal(signal.SIGINT)
    rest, err = cell.communicate(timeout=120)
    assert cell.returncode == 0, err
    assert rest.strip() == "interrupted []"  # KeyboardInterrupt reached the cell; the build's thread is gone
    assert not out.exists() and Path(f"{out}.journal").exists()  # cancelled: the work so far is kept
    assert fficube.make_cube(paths, out, max_memory="125kB", resume=True).resumed_rows > 0
    assert_verifies(out)


# ----------------------------------------------------------------------------------
# Start-up and --debug


INTERRUPTED_IMPORT = textwrap.dedent(
    """
    import sys

    class CtrlC:  # Ctrl-C arrives while astropy is being imported (fault injection)
        def find_spec(self, name, path=None, target=None):
            if name == "astropy":
                raise KeyboardInterrupt
            return None

    sys.meta_path.insert(0, CtrlC())
    sys.argv = ["fficube", *sys.argv[1:]]
    from fficube._entry import main
    sys.exit(main())
    """
)


def test_ctrl_c_while_the_command_starts_prints_one_line(paths, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", INTERRUPTED_IMPORT, "build", *paths, "-o", str(tmp_path / "c.fits")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 130
    assert done.stderr.strip() == "fficube: interrupted while starting; nothing was written"
    assert not list(tmp_path.glob("c.fits*"))


def test_debug_output_masks_credentials_from_every_logger_and_the_traceback(forbidden: str, tmp_path: Path) -> None:
    url = f"http://alice:PASSWORD789@{forbidden}/tess/a_ffic.fits?X-Amz-Signature=SIG42"
    done = subprocess.run([sys.executable, "-m", "fficube.cli", "--debug", "build", url, "-o",
                           str(tmp_path / "c.fits")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "DEBUG" in done.stderr  # --debug still shows what it shows
    assert "PASSWORD789" not in done.stderr + done.stdout and "SIG42" not in done.stderr + done.stdout


def test_output_into_a_closed_pipe_ends_quietly(paths, tmp_path: Path) -> None:
    # `fficube verify cube | head -1`: the reader goes away; fficube must not call that an error.
    cube = tmp_path / "c.fits"
    fficube.make_cube(paths, cube)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written: every write fails
    try:
        done = subprocess.run([sys.executable, "-m", "fficube.cli", "verify", str(cube)], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 141 and done.stderr == ""


def test_access_denied_to_an_anonymous_request_does_not_advise_anonymous_reads() -> None:
    from fficube.sources.policy import describe_failure

    denied = PermissionError("403 Forbidden")
    assert "anon=True" in describe_failure(denied) and "read anonymously" in describe_failure(denied)
    anonymous = describe_failure(denied, anonymous=True)
    assert "not public" in anonymous and "without anon=True" in anonymous and "read anonymously" not in anonymous
