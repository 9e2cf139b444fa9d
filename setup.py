"""The compiled part of fficube: one optional C kernel (``src/fficube/_kernels.c``).

Everything else is configured in ``pyproject.toml``.  The extension is optional: without
a C compiler the install still succeeds, and assembly transposes with numpy instead,
more slowly (``fficube.assemble``).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("fficube._kernels", ["src/fficube/_kernels.c"], optional=True)])
