"""The container image recipe and the AWS Batch examples say what fficube accepts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from fficube.cli import _parser

ROOT = Path(__file__).resolve().parents[1]
BATCH = ROOT / "examples" / "aws-batch"


def test_dockerfile_runs_fficube_as_a_non_root_user() -> None:
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    bases = [ln.split()[1] for ln in lines if ln.startswith("FROM")]
    assert bases and all(re.fullmatch(r"python:3\.1[1-9]-slim", b) for b in bases)
    final = lines[max(i for i, ln in enumerate(lines) if ln.startswith("FROM")):]
    users = [ln.split()[1] for ln in final if ln.startswith("USER")]
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["fficube"]' in final
    # What the image copies must exist, and what it leaves out must not be needed.
    for line in lines:
        if line.startswith("COPY") and "--from" not in line:
            for item in line.split()[1:-1]:
                assert (ROOT / item).exists(), item


def test_the_wheel_carries_the_package_data_and_the_command(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "--wheel-dir", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    import zipfile

    (wheel,) = tmp_path.glob("fficube-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "fficube/data/tica_header_sample.txt" in names
    assert "fficube/py.typed" in names  # type checkers use fficube's annotations
    assert {"fficube/sinks/local.py", "fficube/sinks/s3.py"} <= set(names)
    # The compiled transposition goes in (this machine has a C compiler), its source too.
    assert any(re.fullmatch(r"fficube/_kernels\..*\.so", n) for n in names), names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "fficube = fficube._entry:main" in zipfile.ZipFile(wheel).read(entry).decode()


def _substitute(command: list[str], parameters: dict[str, str]) -> list[str]:
    return [parameters[a[len("Ref::"):]] if a.startswith("Ref::") else a for a in command]


def test_batch_job_definition_is_a_valid_fficube_command() -> None:
    definition = json.loads((BATCH / "job-definition.json").read_text())
    command = _substitute(definition["containerProperties"]["command"], definition["parameters"])
    args = _parser().parse_args(command)
    assert args.command == "sector" and args.sector == 1 and args.anon
    assert args.source == "s3://stpubdata/tess/public/ffi" and args.dest.startswith("s3://")
    memory = {r["type"]: r["value"] for r in definition["containerProperties"]["resourceRequirements"]}
    # The container's memory holds the budget plus the process's own (tests: + 150 MB).
    assert int(memory["MEMORY"]) * 2**20 >= 12e9 + 300e6
    for name in ("compute-environment.json", "job-queue.json"):
        json.loads((BATCH / name).read_text())


def test_submit_scripts_use_commands_fficube_accepts() -> None:
    for script in ("submit.sh", "submit-sharded.sh"):
        text = (BATCH / script).read_text()
        assert subprocess.run(["bash", "-n", str(BATCH / script)]).returncode == 0
        assert "--array-properties" in text
    sharded = (BATCH / "submit-sharded.sh").read_text()
    common = ["sector", "7", "--source", "s3://stpubdata/tess/public/ffi", "--anon", "--dest", "s3://b/c",
              "--camera", "1", "--ccd", "2", "--max-memory", "12GB"]
    assert all(a in sharded for a in ("--shard", "index/$shards", "--finish", "--depends-on"))
    assert _parser().parse_args([*common, "--shard", "index/4"]).shard == "index/4"
    assert _parser().parse_args([*common, "--finish"]).finish
