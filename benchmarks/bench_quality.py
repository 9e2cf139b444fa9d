"""What the quality gate costs: CPU of a local build with the gate on and off, and the gate's own CPU.

    python benchmarks/bench_quality.py --n 100 --repeat 5

Writes ``--n`` synthetic SPOC FFIs (2078 x 2136, float32, as ``bench_local.py`` makes them,
in the same ``--data`` directory, reused on later runs), then:

1. **Builds**, in alternation, ``--repeat`` times each: ``fficube.make_cube`` with the
   gate on (the default) and with ``quality=False``, each in a separate process; user +
   system CPU, wall time and peak RSS from :mod:`measure`.  The gate's cost is the
   difference of the medians, as a share of the build without it (the issue's bound: 5%).
2. **The gate alone**, in a separate process: :class:`fficube.quality.QualityGate` fed
   every block of a cube of the same shape (a block buffer of the build's block rows,
   filled with noise once), then judged with a table of ``--n`` rows; CPU from
   ``time.process_time``.  This measures the gate without the noise of two whole builds.

Prints a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_local import make_inputs, parse_size, run  # the same inputs and measures
from measure import measured

BUILD = """
import sys, json, fficube
paths, out, budget, quality = json.loads(sys.argv[1])
result = fficube.make_cube(paths, out, max_memory=budget, overwrite=True, quality=quality)
if sys.argv[2:] == ["--print"]:
    print(json.dumps({"blocks": result.blocks, "block_rows": result.block_rows,
                      "quality": result.quality.summary() if result.quality else None}))
"""

GATE_ALONE = """
import sys, json, time
import numpy as np
from astropy.io import fits
from fficube.products import SPOC
from fficube.quality import QualityGate
rows, cols, n, block_rows = json.loads(sys.argv[1])
block = np.empty((block_rows, cols, n, 2), dtype=">f4")
block[...] = np.random.default_rng(0).normal(150, 5, size=(block_rows, cols, n, 2)).astype(np.float32)
table = fits.BinTableHDU.from_columns([
    fits.Column(name="TSTART", format="D", array=1325.0 + np.arange(n) / 48),
    fits.Column(name="CTYPE1", format="A12", array=["RA---TAN-SIP"] * n),
    fits.Column(name="CTYPE2", format="A12", array=["DEC--TAN-SIP"] * n),
    fits.Column(name="DQUALITY", format="J", array=np.zeros(n, np.int32)),
    fits.Column(name="FFI_FILE", format="A44", array=[f"ffi{i}" for i in range(n)]),
])
start = time.process_time()
gate = QualityGate((rows, cols, n, 2))
for first in range(0, rows, block_rows):
    stop = min(rows, first + block_rows)
    if gate.wants(first, stop):
        gate.observe(block, first, stop)
observed = time.process_time()
quality = gate.result(table, SPOC)
done = time.process_time()
print(json.dumps({"observe": observed - start, "result": done - observed, "total": done - start,
                  "summary": quality.summary()}))
"""


def run_json(argv: list[str]) -> tuple[dict, dict]:
    """Run a child that prints one JSON line: (its measures, its output)."""
    measures, out = measured(argv, capture=True)
    return {"cpu": measures["cpu"], "rss": measures["rss"]}, json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--memory", default="1GB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("bench-data"))
    args = parser.parse_args()

    paths = make_inputs(args.data / f"ffis-{args.n}", args.n)
    out = args.data / "cube-quality.fits"
    budget = parse_size(args.memory)
    cases = {"gate on": True, "gate off": False}
    results: dict[str, list[dict]] = {name: [] for name in cases}
    info: dict[str, dict] = {}
    for round_ in range(args.repeat):
        for name, quality in cases.items():  # alternate, so that drift hits both alike
            if out.exists():
                out.unlink()
            subprocess.run(["sync"], check=True)
            measured = run([sys.executable, "-c", BUILD, json.dumps([paths, str(out), budget, quality])])
            results[name].append(measured)
            print(f"round {round_ + 1} {name}: {measured['wall']:.1f} s wall, {measured['cpu']:.2f} s CPU, "
                  f"{measured['rss']:.0f} MB", file=sys.stderr)
    if out.exists():
        out.unlink()
    # The build's blocks, for the gate-alone run (one extra build, not timed).
    _, info = run_json([sys.executable, "-c", BUILD, json.dumps([paths, str(out), budget, True]), "--print"])
    out.unlink()
    gate_runs = [run_json([sys.executable, "-c", GATE_ALONE, json.dumps([2078, 2136, args.n, info["block_rows"]])])
                 for _ in range(args.repeat)]

    cpu = {name: statistics.median(r["cpu"] for r in runs) for name, runs in results.items()}
    print(f"\n{args.n} FFIs of 2078 x 2136, max_memory {args.memory}, {info['blocks']} blocks of "
          f"{info['block_rows']} rows, {os.cpu_count()} cores, medians of {args.repeat}\n")
    print(f"gate's verdict: {info['quality']}\n")
    print("| run | wall s | CPU s (user + sys) | peak RSS MB |")
    print("|---|---:|---:|---:|")
    for name, runs in results.items():
        wall = statistics.median(r["wall"] for r in runs)
        rss = max(r["rss"] for r in runs)
        print(f"| build, {name} | {wall:.2f} | {cpu[name]:.2f} | {rss:.0f} |")
    alone = statistics.median(output["total"] for _, output in gate_runs)
    observe = statistics.median(output["observe"] for _, output in gate_runs)
    print(f"| the gate alone (observe {observe:.3f} s + result) | | {alone:.3f} | |")
    off = cpu["gate off"]
    print(f"\ngate's cost: {cpu['gate on'] - off:+.2f} s of CPU between the builds "
          f"({100 * (cpu['gate on'] - off) / off:+.1f}% of the build without it); "
          f"measured alone: {alone:.3f} s ({100 * alone / off:.2f}%); bound: 5%")


if __name__ == "__main__":
    main()
