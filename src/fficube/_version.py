"""fficube's version (one place: the package metadata, --version and HISTORY cards read it)."""

__version__ = "0.1.0"
