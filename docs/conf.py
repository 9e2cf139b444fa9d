"""Sphinx configuration of fficube's documentation (``make docs``).

The build needs no network: intersphinx links to numpy, astropy, xarray and Python
are made only when ``FFICUBE_DOCS_INTERSPHINX=1`` is set (the inventories are then
downloaded); without it, the same names are plain text.
"""

from __future__ import annotations

import os

import fficube  # installed: pip install '.[docs]'

project = "fficube"
author = "fficube developers"
copyright = "fficube developers"
version = release = fficube.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "numpydoc",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "README.md"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# API reference: numpydoc docstrings, documented members only.
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
if os.environ.get("FFICUBE_DOCS_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "astropy": ("https://docs.astropy.org/en/stable", None),
        "xarray": ("https://docs.xarray.dev/en/stable", None),
    }

html_theme = "furo"
html_title = f"fficube {version}"
html_static_path: list[str] = []
