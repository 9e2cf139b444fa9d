"""Views of a finished cube: what users make of one, never part of building it.

* :mod:`~fficube.views.cut`: target pixel files cut from a cube (``fficube cut``);
* :mod:`~fficube.views.dataset`: the cube as an xarray Dataset, read lazily;
* :mod:`~fficube.views.refs`: a kerchunk-style manifest of the cube's chunks;
* :mod:`~fficube.views.overview`: a few sampled rows and the info table, for figures;
* :mod:`~fficube.views.plot`: the figures of ``fficube plot``.
"""
