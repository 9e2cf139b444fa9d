"""Stop or kill a CLI build (a child process) at a point it reaches for sure.

A point is chosen by what the build has done, never by time: "inside the write that
reaches byte K of ``<output>.partial``", "at the first flush", "right after the first
journal update", "before uploading part 3".  The child imports this file at start-up
(a ``sitecustomize.py`` put first on its ``PYTHONPATH`` loads it) and, when the
``FFICUBE_TEST_FAULT`` environment variable holds a point, wraps a few OS calls
(``os.open``, ``os.pwrite``, ``os.fdatasync``, ``os.fsync``, ``os.replace``) and the
S3 client's API calls.  This is fault injection, not mocking: every call still runs.

At the point, the child either SIGKILLs itself (``"action": "kill"``), or SIGSTOPs
itself (``"stop"``) so that the test can deliver a signal at that exact place and
then SIGCONT it.  A kill also models a power cut: the bytes of the partial file written
since its last flush (``fdatasync``/``fsync``) are overwritten with junk first, so a
journal that runs ahead of flushed data is caught, not hidden by the page cache.

Points (the ``at`` key of the spec):

``open``
    right after the partial file is created or reopened (start-up: nothing written);
``write`` (with ``offset`` K)
    inside the write that covers byte K of the partial file, once bytes up to K are
    written (a K in the headers is a start-up point, before any block);
``sync``
    the first flush of the partial file (``fdatasync``, a checkpoint): the block is
    written, neither flushed nor recorded;
``journal-tmp``
    the first journal update, its new version written and flushed, before the rename;
``journal``
    right after the first journal update's rename;
``commit``
    the rename of the finished partial file over the output, just before it;
``s3`` (with ``op``, ``when`` and optionally ``part``)
    ``before`` or ``after`` an S3 API call: ``op`` is its name (``UploadPart``,
    ``PutObject``, ``CreateMultipartUpload``...); ``part`` is the part number of an
    ``UploadPart``, or for ``PutObject`` of the journal the highest part it records
    (0: none; the journal written before the upload starts records no upload and
    matches no part).

Each point fires once per process.  When the spec has a ``log`` path, the child appends
one JSON line saying where it fired before acting, so tests can check which point was hit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV = "FFICUBE_TEST_FAULT"
JUNK = 0xA5

# ----------------------------------------------------------------------------------
# In the child


class _Injector:
    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = dict(spec)
        self.fired = False
        self.lock = threading.RLock()  # held by partial-file writes, flush snapshots and fire()
        self.partial_fds: dict[int, str] = {}  # descriptor -> path of a partial file
        self.dirty: dict[str, list[tuple[int, int]]] = {}  # path -> (offset, length) written, not flushed
        self.real = {name: getattr(os, name) for name in ("open", "close", "pwrite", "fdatasync", "fsync", "replace")}

    # -- acting --------------------------------------------------------------------
    def fire(self, event: str, **detail: Any) -> None:
        """Act at the point (once): log it, then kill (after the power cut) or stop."""
        with self.lock:
            if self.fired:
                return
            self.fired = True
            log = self.spec.get("log")
            if log:
                line = json.dumps({"pid": os.getpid(), "event": event, **detail}) + "\n"
                fd = self.real["open"](log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    os.write(fd, line.encode())
                finally:
                    self.real["close"](fd)
            if self.spec.get("action", "kill") == "stop":
                os.kill(os.getpid(), signal.SIGSTOP)  # returns once the test sends SIGCONT
                return
            self.power_cut()
            os.kill(os.getpid(), signal.SIGKILL)
            while True:  # never return into the build
                time.sleep(1)

    def power_cut(self) -> None:
        """Overwrite what was written to partial files since their last flush."""
        for path, ranges in self.dirty.items():
            try:
                fd = self.real["open"](path, os.O_WRONLY)
            except OSError:
                continue
            try:
                size = os.fstat(fd).st_size
                for offset, length in ranges:
                    length = min(length, size - offset)
                    if length > 0:
                        self.real["pwrite"](fd, bytes([JUNK]) * length, offset)
            finally:
                self.real["close"](fd)

    # -- the wrapped calls ---------------------------------------------------------
    def open(self, path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        fd = self.real["open"](path, flags, *args, **kwargs)
        name = os.fsdecode(os.fspath(path))
        if name.endswith(".partial"):
            with self.lock:
                self.partial_fds[fd] = os.path.abspath(name)
            if self.spec["at"] == "open":
                self.fire("open", path=name)
        return fd

    def close(self, fd):  # type: ignore[no-untyped-def]
        with self.lock:
            self.partial_fds.pop(fd, None)
        return self.real["close"](fd)

    def pwrite(self, fd, data, offset):  # type: ignore[no-untyped-def]
        path = self.partial_fds.get(fd)
        if path is None:
            return self.real["pwrite"](fd, data, offset)
        with self.lock:
            target = self.spec.get("offset")
            if self.spec["at"] == "write" and not self.fired and offset <= target < offset + len(data):
                view = memoryview(data).cast("B")
                done = 0
                while offset + done < target:
                    done += self.real["pwrite"](fd, view[done : target - offset], offset + done)
                self.dirty.setdefault(path, []).append((offset, done))
                self.fire("write", offset=target, call_offset=offset, call_bytes=len(view))
                # Stopped and continued: finish the write, as the caller asked.
                while done < len(view):
                    done += self.real["pwrite"](fd, view[done:], offset + done)
                self.dirty[path].append((offset, done))
                return done
            written = self.real["pwrite"](fd, data, offset)
            self.dirty.setdefault(path, []).append((offset, written))
            return written

    def _flush(self, name: str, fd):  # type: ignore[no-untyped-def]
        path = self.partial_fds.get(fd)
        if path is None:
            return self.real[name](fd)
        if name == "fdatasync" and self.spec["at"] == "sync":
            self.fire("sync")
        with self.lock:  # what is written now is on disk once the flush returns
            flushed = list(self.dirty.get(path, []))
        result = self.real[name](fd)
        with self.lock:
            left = self.dirty.get(path, [])
            for item in flushed:
                if item in left:
                    left.remove(item)
        return result

    def fdatasync(self, fd):  # type: ignore[no-untyped-def]
        return self._flush("fdatasync", fd)

    def fsync(self, fd):  # type: ignore[no-untyped-def]
        return self._flush("fsync", fd)

    def replace(self, src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        name = os.fsdecode(os.fspath(src))
        at = self.spec["at"]
        if name.endswith(".journal.tmp") and at == "journal-tmp":
            self.fire("journal-tmp")
        elif name.endswith(".partial") and at == "commit":
            self.fire("commit")
        result = self.real["replace"](src, dst, *args, **kwargs)
        if name.endswith(".journal.tmp") and at == "journal":
            self.fire("journal")
        return result

    # -- S3 --------------------------------------------------------------------------
    def s3_matches(self, operation: str, params: Mapping[str, Any]) -> bool:
        if operation != self.spec["op"]:
            return False
        if "part" not in self.spec:
            return True
        if operation == "UploadPart":
            return int(params.get("PartNumber", 0)) == self.spec["part"]
        if operation == "PutObject" and str(params.get("Key", "")).endswith(".journal"):
            journal = json.loads(bytes(params["Body"]))  # a journal's body is bytes
            if "upload_id" not in journal:
                return False  # written just before the upload starts: it records no part
            return max(map(int, journal["parts"]), default=0) == self.spec["part"]
        return False

    def patch_s3(self) -> None:
        from aiobotocore.client import AioBaseClient

        make_api_call = AioBaseClient._make_api_call
        injector = self

        async def _make_api_call(client, operation_name, api_params):  # type: ignore[no-untyped-def]
            match = not injector.fired and injector.s3_matches(operation_name, api_params)
            detail = {"op": operation_name, "part": api_params.get("PartNumber", injector.spec.get("part"))}
            if match and injector.spec.get("when") == "before":
                injector.fire("s3-before", **detail)
            result = await make_api_call(client, operation_name, api_params)
            if match and injector.spec.get("when") == "after":
                injector.fire("s3-after", **detail)
            return result

        AioBaseClient._make_api_call = _make_api_call

    def install(self) -> None:
        if self.spec.get("action", "kill") == "stop":
            # The test will send SIGINT as a user's Ctrl-C: a test run in the background
            # (SIGINT ignored, as shells start `&` jobs) must not make the child ignore it.
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if self.spec["at"] == "s3":
            self.patch_s3()
            return
        for name in ("open", "close", "pwrite", "fdatasync", "fsync", "replace"):
            setattr(os, name, getattr(self, name))


def install() -> None:
    """Called by the child's ``sitecustomize``: arm the point the environment names."""
    raw = os.environ.get(ENV)
    if raw:
        _Injector(json.loads(raw)).install()


# ----------------------------------------------------------------------------------
# In the test


def child_env(tmp_path: Path, spec: Mapping[str, Any]) -> dict[str, str]:
    """The environment for a child that acts at ``spec``'s point (see the module doc)."""
    site = tmp_path / "fault-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import importlib.util\n"
        f"_spec = importlib.util.spec_from_file_location('fficube_test_faults', {str(Path(__file__).resolve())!r})\n"
        "_module = importlib.util.module_from_spec(_spec)\n"
        "_spec.loader.exec_module(_module)\n"
        "_module.install()\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    env[ENV] = json.dumps(dict(spec))
    return env


def fired(log: Path) -> list[dict[str, Any]]:
    """The points children logged, in order."""
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def run_to_kill(command: list[str], tmp_path: Path, spec: Mapping[str, Any], timeout: float = 300) -> dict[str, Any]:
    """Run ``command`` until it kills itself at ``spec``'s point; return what it logged there.

    Fails if the process ends any other way (the point was not reached, or it failed).
    """
    log = tmp_path / "faults.log"
    before = len(fired(log))
    proc = subprocess.Popen(command, env=child_env(tmp_path, {**spec, "action": "kill", "log": str(log)}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"{spec}: exit {proc.returncode}, not killed at its point\n{err}"
    events = fired(log)[before:]
    assert len(events) == 1 and events[0]["pid"] == proc.pid, (spec, events)
    return events[0]


def start_to_stop(command: list[str], tmp_path: Path, spec: Mapping[str, Any]) -> subprocess.Popen:
    """Start ``command``, which stops itself (SIGSTOP) at ``spec``'s point.

    The caller must wait for the stop (:func:`wait_stopped`), and end the process.
    """
    return subprocess.Popen(command, env=child_env(tmp_path, {**spec, "action": "stop"}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_stopped(proc: subprocess.Popen, timeout: float = 300) -> None:
    """Wait until ``proc`` is stopped (not reaping it); fail if it ends instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # WNOWAIT: leave the state for Popen; WEXITED too, so that an early end is seen.
        info = os.waitid(os.P_PID, proc.pid, os.WSTOPPED | os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is not None and info.si_pid == proc.pid:
            if info.si_code == os.CLD_STOPPED:
                return
            _, err = proc.communicate()
            raise AssertionError(f"the build ended (exit {proc.returncode}) before its stop point\n{err}")
        time.sleep(0.01)
    raise AssertionError("the build did not reach its stop point in time")
