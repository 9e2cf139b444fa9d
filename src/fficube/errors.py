"""Exceptions raised by fficube.

Every error is an :class:`FficubeError` and also inherits the builtin that a caller
would catch without knowing fficube (``ValueError`` for bad input, ``OSError`` for
I/O, ``FileExistsError`` for an output that is already there), so both
``except fficube.FficubeError`` and ``except ValueError`` work::

    FficubeError (Exception)
    ├── InputError (ValueError)            the inputs cannot make a cube
    │   ├── NoInputsError                  nothing matched
    │   ├── FitsFormatError                a file is not what it should be (truncated, not an FFI...)
    │   ├── MixedInputError                products, cameras, CCDs, shapes or sectors differ
    │   └── OutsideFootprintError          a cutout target is off the cube's footprint
    ├── OptionError (ValueError)           an option value fficube cannot use
    ├── MemoryBudgetError (ValueError)     max_memory cannot hold one row of the cube
    ├── ResumeError (ValueError)           an interrupted build is there, or cannot be resumed as asked
    ├── ReadError (OSError)                an input could not be read
    ├── OutputError (OSError)              the output could not be written
    │   └── OutputExistsError (FileExistsError)   the output exists and overwrite is off
    ├── EventLoopError (RuntimeError)      a sync twin called from inside a running fficube call
    └── MissingExtraError (ImportError)    an optional extra is not installed
    FficubeWarning (UserWarning)
    ├── DuplicateInputWarning              a file given twice is used once
    ├── LeftOutInputWarning                an explicit product leaves files of another out
    └── TemplateWarning                    no FFI of a TICA batch has a celestial WCS

Errors that concern one input file carry its ``path`` and, where known, the byte
``range`` that was being read, and put both in the message.  Every error's ``options``
names the options (the Python API's keywords) its message speaks of, so that the
command line can name them by their flags instead (``--overwrite`` for
``overwrite=True``).
"""

from __future__ import annotations

from collections.abc import Sequence

from .redact import redact

__all__ = [
    "os_reason",
    "FficubeError",
    "InputError",
    "NoInputsError",
    "FitsFormatError",
    "MixedInputError",
    "OutsideFootprintError",
    "ReadError",
    "OutputError",
    "OutputExistsError",
    "MemoryBudgetError",
    "EventLoopError",
    "ResumeError",
    "OptionError",
    "FficubeWarning",
    "DuplicateInputWarning",
    "LeftOutInputWarning",
    "TemplateWarning",
    "MissingExtraError",
]


def os_reason(exc: BaseException) -> str:
    """What an OS error says, in the lower case of fficube's messages ("no such file or
    directory"), without the errno and file name it repeats."""
    text = (exc.strerror if isinstance(exc, OSError) and exc.strerror else None) or str(exc)
    return text[:1].lower() + text[1:]


class FficubeError(Exception):
    """Base class of every error fficube raises on purpose.

    Messages never show credentials: URLs' user info and secret query values (as in
    presigned URLs) are masked (:func:`fficube.redact.redact`).
    """

    #: The options (the Python API's keywords) that the message names, spelled
    #: ``keyword=True``, ``keyword=value``, ``keyword = value`` or ``keyword: ...``:
    #: the cause or the remedy.  The command line shows each as its flag.
    options: tuple[str, ...] = ()

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class InputError(FficubeError, ValueError):
    """The inputs cannot make a cube (bad file, bad combination of files, bad option)."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class NoInputsError(InputError):
    """No input was given, or a path, directory or pattern matched no FFI."""


class FitsFormatError(InputError):
    """A file is not a FITS file of the expected layout (truncated, wrong HDUs, ...)."""

    def __init__(
        self, message: str, *, path: str, byte_range: tuple[int, int] | None = None
    ) -> None:
        self.range = byte_range
        where = f" (bytes {byte_range[0]}-{byte_range[1]})" if byte_range else ""
        super().__init__(message + where, path=path)


class MixedInputError(InputError):
    """The inputs do not belong to one cube (products, cameras, CCDs or shapes differ)."""

    options = ("sector",)  #: a sector given that the FFIs contradict


class OutsideFootprintError(InputError):
    """A cutout target is off the cube's footprint: its window misses the CCD, or the
    cube's WCS cannot place it.  ``targets`` holds each such target (its ``label``
    names it in the message) and ``reasons`` why, in the same order."""

    def __init__(self, target: object, reason: str, *, path: str | None = None,
                 more: Sequence[tuple[object, str]] | None = None) -> None:
        self.targets = [target, *(t for t, _ in more or [])]
        self.reasons = [reason, *(r for _, r in more or [])]
        self.target, self.reason = target, reason
        lines = [f"{getattr(t, 'label', t)} is outside the cube's footprint: {r}"
                 for t, r in zip(self.targets, self.reasons, strict=True)]
        head = f"{len(lines)} targets are outside the cube's footprint:\n  " if len(lines) > 1 else ""
        super().__init__(head + "\n  ".join(lines) if head else lines[0], path=path)

    @classmethod
    def of_many(cls, failed: Sequence[tuple[object, str]], *, path: str | None = None) -> OutsideFootprintError:
        """One error naming every target of ``failed`` ((target, reason) pairs, at least one)."""
        (target, reason), *more = failed
        return cls(target, reason, path=path, more=more)


class OptionError(FficubeError, ValueError):
    """An option has a value fficube cannot use (``max_memory="lots"``, ``concurrency=0``...).

    ``option`` is the option's name, as the Python API spells it, and ``detail`` what
    is wrong with its value (the message is ``"option: detail"``).
    """

    def __init__(self, option: str, message: str) -> None:
        self.option, self.detail = option, message
        self.options = (option,)
        super().__init__(f"{option}: {message}")


class MemoryBudgetError(FficubeError, ValueError):
    """``max_memory`` is too small to hold even one row of the cube."""

    options = ("max_memory",)


class ReadError(FficubeError, OSError):
    """Reading an input failed (the file vanished, was cut short, or the backend failed)."""

    def __init__(self, message: str, *, path: str, byte_range: tuple[int, int] | None = None) -> None:
        self.path = path
        self.range = byte_range
        where = f" (bytes {byte_range[0]}-{byte_range[1]})" if byte_range else ""
        super().__init__(f"{path}{where}: {message}")


class OutputError(FficubeError, OSError):
    """The cube cannot be written where it was asked to go."""

    def __init__(self, message: str, *, path: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class OutputExistsError(OutputError, FileExistsError):
    """The output exists and ``overwrite`` was not given."""

    options = ("overwrite",)  #: the remedy


class EventLoopError(FficubeError, RuntimeError):
    """A synchronous function was called from a running event loop."""


class ResumeError(FficubeError, ValueError):
    """An interrupted build cannot be continued as asked (or must be, or restarted).

    Raised when the output has an interrupted build and neither ``resume`` nor
    ``restart`` was given, or when ``resume`` finds that the plan changed.
    """

    options = ("resume", "restart")  #: the remedies

    def __init__(self, message: str, *, path: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class FficubeWarning(UserWarning):
    """Base class of fficube's warnings."""


class DuplicateInputWarning(FficubeWarning):
    """The same file was given more than once; it is used once."""


class LeftOutInputWarning(FficubeWarning):
    """A directory or prefix searched for one product (``product="spoc"``) holds FFIs of
    another, which are left out; the warning counts them."""


class TemplateWarning(FficubeWarning):
    """The info-table template has no WCS, so cutout tools will find none in the cube."""


class MissingExtraError(FficubeError, ImportError):
    """A feature's optional dependency is not installed; the message names the extra
    that installs it (``pip install 'fficube[plot]'``)."""
