"""Sector-scale runs: the cubes of a whole sector, and one cube built by several workers.

* :mod:`~fficube.sectors.sector`: the 16 cubes of a sector (``fficube sector``), each
  skipped when complete, resumed when interrupted;
* :mod:`~fficube.sectors.shard`: one cube's rows split between workers (AWS Batch array
  jobs, SLURM arrays), which agree on one plan and finish the cube together.
"""
