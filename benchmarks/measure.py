"""Run a command and measure it: wall time, user and system CPU, and its own peak RSS.

A child's ``ru_maxrss`` (from ``wait4``) is not its own peak when its parent is large:
at ``exec`` Linux keeps the high-water RSS of the memory the child was started with,
and with ``fork`` or ``vfork`` (what :mod:`subprocess` uses) that is the parent's.  A
benchmark that keeps moto's S3 server, and every object in it, in its own process
would report that size for every build.  So the command is started by a small
intermediate interpreter (``python -I -S``, about 10 MB), whose ``wait4`` gives the
command's own figures: its peak RSS, or the intermediate's size if that is larger.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

__all__ = ["measured"]

_STARTER = r"""
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with os.fdopen(int(sys.argv[1]), "w") as out:
    json.dump({"status": os.waitstatus_to_exitcode(status), "user": usage.ru_utime, "sys": usage.ru_stime,
               "rss": usage.ru_maxrss / 1024}, out)
"""


def measured(argv: list[str], *, capture: bool = False) -> tuple[dict, str]:
    """Run ``argv``; return its measures and, with ``capture``, its standard output.

    The measures are ``wall`` (seconds, as seen from here), ``user``, ``sys`` and ``cpu``
    (CPU seconds of the command alone) and ``rss`` (its peak resident set, MB).  A
    command that fails stops the benchmark.
    """
    read, write = os.pipe()
    start = time.perf_counter()
    with subprocess.Popen([sys.executable, "-I", "-S", "-c", _STARTER, str(write), *argv], pass_fds=(write,),
                          stdout=subprocess.PIPE if capture else None, text=True) as proc:
        os.close(write)
        out = proc.stdout.read() if proc.stdout else ""
        with os.fdopen(read) as pipe:
            report = pipe.read()
    wall = time.perf_counter() - start
    result = json.loads(report) if report else {"status": proc.returncode}
    if result["status"] != 0:
        raise SystemExit(f"failed ({result['status']}): {' '.join(argv[:3])}")
    return {"wall": wall, "user": result["user"], "sys": result["sys"], "cpu": result["user"] + result["sys"],
            "rss": result["rss"]}, out
