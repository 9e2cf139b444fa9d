"""Keep credentials out of messages, logs, journals and cubes.

URLs can carry secrets: ``https://user:password@host/...`` and presigned URLs
(``?X-Amz-Signature=...&X-Amz-Credential=...``).  :func:`redact` masks both
wherever they occur in a text; every fficube error message and every record of the
``fficube`` logger passes through it.  Storage options (keys, secrets, tokens) are
never put into a message; :func:`redact_options` is for showing them anyway.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["redact", "redact_options", "file_name", "MASK"]

MASK = "***"

_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s?#]+)@")
#: Query parameters that hold secrets in presigned URLs and token-authenticated APIs.
_SECRET_PARAM = re.compile(
    r"(?P<key>[?&](?:[A-Za-z0-9_.-]*(?:signature|credential|token|secret|password|passwd|key|sig|auth)"
    r"[A-Za-z0-9_.-]*))=(?P<value>[^&#\s'\"]*)",
    re.IGNORECASE,
)
_SECRET_OPTION = re.compile(r"(key|secret|token|password|passwd|credential|auth)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with URL user info and secret-looking query values masked."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['key']}={MASK}", text)


def redact_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Storage options fit to show: values of secret-looking keys masked, nested too."""
    shown: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, Mapping):
            shown[key] = redact_options(value)
        elif _SECRET_OPTION.search(str(key)):
            shown[key] = MASK
        else:
            shown[key] = redact(value) if isinstance(value, str) else value
    return shown


def file_name(path: str) -> str:
    """A file's name for the cube's ``FFI_FILE`` column: no directory, no query string."""
    if "://" in path:
        path = path.split("?", 1)[0].split("#", 1)[0]
    return path.rstrip("/").rsplit("/", 1)[-1]


class _RedactingFilter(logging.Filter):
    """Masks secrets in every record of the ``fficube`` logger (a filter, not configuration:
    handlers and levels stay the application's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


logging.getLogger("fficube").addFilter(_RedactingFilter())
