"""Where a file is: a local path, or a URL of some protocol."""

from __future__ import annotations

__all__ = ["S3_PROTOCOLS", "is_url", "protocol_of", "protocol_or_local"]

S3_PROTOCOLS = ("s3", "s3a")


def is_url(path: str) -> bool:
    """True for ``proto://...`` locations other than local files."""
    return "://" in path and not path.startswith("file://")


def protocol_of(url: str) -> str:
    """The protocol of a URL, lower case (``"s3"`` for ``s3://bucket/key``)."""
    return url.split("://", 1)[0].lower()


def protocol_or_local(path: str) -> str | None:
    """The protocol of ``path``, or None for a local path."""
    return protocol_of(path) if is_url(path) else None
