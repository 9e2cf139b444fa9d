"""Files made durable: written, flushed to disk, renamed or linked into place atomically.

The journals, the partial cube's companions, staged copies and the statistics file
use them; each is blocking (call it from a worker thread).
"""

from __future__ import annotations

import os

__all__ = ["FILE_MODE", "sync_directory", "write_synced", "replace_file", "create_file"]

#: Mode of the files fficube creates, before the umask: the user's default
#: permissions, but never writable by others, whatever the umask.
FILE_MODE = 0o664


def sync_directory(path: str) -> None:
    """Flush the directory holding ``path`` (a file created, renamed or removed in it)."""
    directory = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_synced(path: str, flags: int, data: bytes = b"", *, size: int | None = None) -> None:
    """Write ``data`` into ``path`` (created; opened with ``flags`` too: ``O_EXCL``,
    ``O_TRUNC``), or make it ``size`` bytes long, and flush it to disk.  (Blocking.)"""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, FILE_MODE)
    try:
        if size is not None:
            os.ftruncate(fd, size)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: str, data: bytes) -> None:
    """Make ``path`` hold ``data``, atomically: written to ``<path>.tmp``, flushed, renamed over
    ``path``, the directory flushed.  On return it is on disk.  (Blocking: call from a thread.)"""
    write_synced(path + ".tmp", os.O_TRUNC, data)
    os.replace(path + ".tmp", path)
    sync_directory(path)


def create_file(path: str, data: bytes) -> bool:
    """Create ``path`` holding ``data``, only if it does not exist; False if it did.

    Atomic, also on shared filesystems (NFS, Lustre, GPFS): the data is written to a
    file of this process's own, then hard-linked to ``path``, which fails if ``path``
    exists.  Nobody ever sees the file empty or half written.  (Blocking: call from a
    thread.)
    """
    temp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"  # a name of this process's own
    write_synced(temp, os.O_EXCL, data)
    try:
        os.link(temp, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(temp)
    sync_directory(path)
    return True
