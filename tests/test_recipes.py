"""The AWS Batch and SLURM recipes schedule: jobs fit their instances, scripts run the commands fficube accepts.

Scripts are run for real with stand-ins for ``aws``, ``sbatch``, ``srun`` and ``fficube`` that
record their arguments; the recorded fficube commands are parsed by fficube's own parser.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from fficube.cli import _parser
from fficube.units import parse_size

ROOT = Path(__file__).resolve().parents[1]
BATCH = ROOT / "examples" / "aws-batch"
SLURM = ROOT / "examples" / "slurm"

#: Instance type -> (vCPUs, memory GiB, baseline network bandwidth Gbps, NVMe instance store GB).
#: Source: Amazon EC2 Instance Types Guide, "Specifications for Amazon EC2 general purpose /
#: compute optimized / memory optimized instances": the performance tables (vCPUs, memory), the
#: network tables (baseline and burst bandwidth: the baseline is what an instance sustains; an
#: "up to" figure is a burst) and the instance store tables.  The *n families (m6in, m6idn, c6in,
#: r6in, r6idn) are the 6th-generation Intel types with the most network per vCPU.
INSTANCES = {
    "m6in.2xlarge": (8, 32, 12.5, 0),
    "m6in.4xlarge": (16, 64, 25.0, 0),
    "c6in.4xlarge": (16, 32, 25.0, 0),
    "r6in.2xlarge": (8, 64, 12.5, 0),
    "m6idn.2xlarge": (8, 32, 12.5, 474),
    "m6idn.4xlarge": (16, 64, 25.0, 950),
    "r6idn.2xlarge": (8, 64, 12.5, 474),
    "r6idn.4xlarge": (16, 128, 25.0, 950),
    # What the recipe allowed before: 2 vCPUs, a baseline of 0.781 Gbps (bursts "up to 12.5").
    "c6i.large": (2, 4, 0.781, 0),
    "m6i.large": (2, 8, 0.781, 0),
    "c7i.large": (2, 4, 0.781, 0),
    "m7i.large": (2, 8, 0.781, 0),
}
#: Memory AWS Batch can give jobs on an instance: the installed memory less platform overhead
#: and the agent's reservation.  Source: AWS Batch User Guide, "Compute resource memory
#: management" (an m4.large's 8 GiB register as 7,985 MiB) and "Reserve system memory" (the AMI
#: reserves 32 MiB; AWS recommends a 5% buffer): we count 95%.
USABLE_MEMORY = 0.95
#: A sustained rate, not a burst (bursts last minutes; a 200-second cube takes hours direct).
MIN_BASELINE_GBPS = 12.5
#: Network per job when an instance is packed with jobs: one S3 connection moves up to 5 Gbps
#: (EC2's single-flow limit), fficube on 2 cores about 7 Gbps (0.9 GB/s, README Benchmarks).
MIN_GBPS_PER_JOB = 5.0
#: A 200-second sector's cube reads 12,000 SPOC FFIs of 2 x 2078 x 2136 float32 (+ headers).
FFIS_200S_BYTES = 12_000 * (2 * 2078 * 2136 * 4 + 5 * 2880)


def load(name: str) -> dict:
    return json.loads((BATCH / name).read_text())


def resources(definition: dict) -> tuple[int, int]:
    """A job definition's (vCPUs, memory MiB)."""
    values = {r["type"]: int(r["value"]) for r in definition["containerProperties"]["resourceRequirements"]}
    return values["VCPU"], values["MEMORY"]


def jobs_per_instance(instance: str, vcpus: int, memory: int) -> int:
    cpus, gib, _, _ = INSTANCES[instance]
    return min(cpus // vcpus, int(gib * 1024 * USABLE_MEMORY) // memory)


def command_of(definition: dict) -> list[str]:
    return [definition["parameters"][a[len("Ref::"):]] if a.startswith("Ref::") else a
            for a in definition["containerProperties"]["command"]]


def stand_ins(tmp_path: Path, **scripts: str) -> dict[str, str]:
    """An environment whose PATH finds the given stand-in commands first; each logs its
    arguments as one JSON line to ``calls.jsonl`` and then runs its script body."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in scripts.items():
        (bin_dir / name).write_text(
            "#!/usr/bin/env python3\nimport json, os, sys\n"
            f"with open({str(tmp_path / 'calls.jsonl')!r}, 'a') as f:\n"
            f"    f.write(json.dumps([{name!r}, *sys.argv[1:]]) + '\\n')\n" + body + "\n")
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def queues() -> dict[str, tuple[dict, list[str]]]:
    """Job queue -> (its compute environment, the job definitions the submit scripts send to it)."""
    environments = {e["computeEnvironmentName"]: e for e in map(load, ("compute-environment.json",
                                                                        "compute-environment-nvme.json"))}
    found: dict[str, tuple[dict, list[str]]] = {}
    for name in ("job-queue.json", "job-queue-nvme.json"):
        queue = load(name)
        (order,) = queue["computeEnvironmentOrder"]
        found[queue["jobQueueName"]] = (environments[order["computeEnvironment"]], [])
    for script in ("submit.sh", "submit-staged.sh", "submit-sharded.sh"):
        text = (BATCH / script).read_text()
        for queue, definition in re.findall(r"--job-queue\s+(\S+)\s+(?:\\\s+)?--job-definition\s+(\S+)", text):
            found[queue][1].append(definition)
    return found


def test_every_job_fits_every_instance_its_queue_may_launch(queues) -> None:
    definitions = {d["jobDefinitionName"]: d for d in map(load, ("job-definition.json", "job-definition-staged.json"))}
    assert {d for _, names in queues.values() for d in names} == set(definitions)  # each is submitted somewhere
    for queue, (environment, names) in queues.items():
        types = environment["computeResources"]["instanceTypes"]
        assert types and set(types) <= set(INSTANCES), (queue, types)
        for name in names:
            vcpus, memory = resources(definitions[name])
            for instance in types:
                assert jobs_per_instance(instance, vcpus, memory) >= 1, (name, instance)
                gbps = INSTANCES[instance][2]
                assert gbps >= MIN_BASELINE_GBPS, f"{instance}: a {gbps} Gbps baseline is a burst recipe"
                assert gbps / jobs_per_instance(instance, vcpus, memory) >= MIN_GBPS_PER_JOB, (name, instance)
            # The container holds fficube's budget and the process's own memory (tests: + 150 MB).
            budget = parse_size(_parser().parse_args(command_of(definitions[name])).max_memory)
            assert memory * 2**20 >= budget + 300e6, name
        assert environment["computeResources"]["maxvCpus"] >= 16 * max(
            resources(definitions[n])[0] for n in names)  # a sector's 16 cubes at once


def test_the_old_recipe_could_not_schedule() -> None:
    # 15,360 MiB asked on instances of 4 or 8 GiB: no instance could host it (the job stayed RUNNABLE).
    assert all(jobs_per_instance(i, 2, 15_360) == 0 for i in ("c6i.large", "m6i.large", "c7i.large", "m7i.large"))


def test_staged_jobs_have_nvme_for_a_200_second_cube_and_mount_it(queues) -> None:
    environment, names = queues["fficube-staged"]
    definition = load("job-definition-staged.json")
    assert names == [definition["jobDefinitionName"]]
    vcpus, memory = resources(definition)
    for instance in environment["computeResources"]["instanceTypes"]:
        disk = INSTANCES[instance][3] * 1e9
        assert disk / jobs_per_instance(instance, vcpus, memory) >= FFIS_200S_BYTES, instance
    # The staged command stages under the container's mount of the host's NVMe file system ...
    args = _parser().parse_args(command_of(definition))
    (mount,) = definition["containerProperties"]["mountPoints"]
    (volume,) = definition["containerProperties"]["volumes"]
    assert args.stage.startswith(mount["containerPath"] + "/") and volume["name"] == mount["sourceVolume"]
    # ... which the launch template's user data mounts at boot, writable by the image's user.
    user_data = (BATCH / "nvme-user-data.txt").read_text()
    host = volume["host"]["sourcePath"]
    top = "/" + host.strip("/").split("/")[0]
    assert re.search(rf"mount .*\"\$device\" {top}$", user_data, re.M)
    uid = re.search(r"useradd .*--uid (\d+)", (ROOT / "Dockerfile").read_text())[1]
    assert f"chown {uid}:{uid} {host}" in user_data
    assert environment["computeResources"]["launchTemplate"]["launchTemplateName"] == "fficube-nvme"


def test_setup_creates_what_the_recipe_names(tmp_path: Path) -> None:
    env = stand_ins(tmp_path, aws="print('VALID' if 'describe-compute-environments' in sys.argv else '')")
    done = subprocess.run(["bash", str(BATCH / "setup.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    made = calls(tmp_path)
    template = next(c for c in made if c[1:3] == ["ec2", "create-launch-template"])
    assert template[template.index("--launch-template-name") + 1] == "fficube-nvme"
    data = json.loads(template[template.index("--launch-template-data") + 1])
    assert base64.b64decode(data["UserData"]) == (BATCH / "nvme-user-data.txt").read_bytes()
    files = [c[c.index("--cli-input-json") + 1].removeprefix("file://") for c in made if "--cli-input-json" in c]
    assert sorted(files) == sorted(p.name for p in BATCH.glob("*.json"))  # every JSON file, once


def test_submit_scripts_send_commands_fficube_accepts(tmp_path: Path) -> None:
    env = stand_ins(tmp_path, aws="print('job-1')")
    for script in ("submit.sh", "submit-staged.sh"):
        assert subprocess.run(["bash", str(BATCH / script), "7", "s3://b/c"], env=env, timeout=60).returncode == 0
    for call in calls(tmp_path):
        assert call[1:3] == ["batch", "submit-job"] and "size=16" in call
        assert call[call.index("--parameters") + 1] == "sector=7,dest=s3://b/c"


def _recorded_fficube(tmp_path: Path, script: Path, variables: dict[str, str]) -> list[list[str]]:
    env = stand_ins(tmp_path, srun="os.execvp(sys.argv[1], sys.argv[1:])", fficube="",
                    sbatch="print('4242;cluster' if '--parsable' in sys.argv else 'Submitted batch job 4243')")
    done = subprocess.run(["bash", str(script)], env={**env, **variables}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [c[1:] for c in calls(tmp_path) if c[0] == "fficube"]


def test_slurm_scripts_run_commands_fficube_accepts(tmp_path: Path) -> None:
    text = (SLURM / "sector.sbatch").read_text()
    assert "#SBATCH --array=0-15" in text
    memory = parse_size(re.search(r"#SBATCH --mem=(\d+)G", text)[1] + "GiB")
    (command,) = _recorded_fficube(tmp_path, SLURM / "sector.sbatch", {
        "SECTOR": "3", "SOURCE": "/archive/ffi", "DEST": "/project/cubes", "STAGE": "/scratch/me",
        "SLURM_ARRAY_TASK_ID": "5"})
    args = _parser().parse_args(command)
    assert (args.command, args.sector, args.source, args.dest, args.stage) == (
        "sector", 3, "/archive/ffi", "/project/cubes", "/scratch/me")
    assert memory >= parse_size(args.max_memory) + 300e6

    shards = {"SECTOR": "3", "CAMERA": "2", "CCD": "4", "SHARDS": "8", "SOURCE": "/a", "DEST": "/d"}
    (worker,) = _recorded_fficube(tmp_path / "w", SLURM / "shards.sbatch", shards)
    assert _parser().parse_args(worker).shard == "index/8"
    (finisher,) = _recorded_fficube(tmp_path / "f", SLURM / "shards.sbatch", {**shards, "FINISH": "1"})
    assert _parser().parse_args(finisher).finish


def test_slurm_sharded_submission_queues_the_finish_after_the_array(tmp_path: Path) -> None:
    env = stand_ins(tmp_path, sbatch="print('4242;cluster' if '--parsable' in sys.argv else 'Submitted 4243')")
    done = subprocess.run(["bash", str(SLURM / "submit-sharded.sh"), "3", "2", "4", "8", "/a", "/d"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    array, finish = calls(tmp_path)
    assert "--array=0-7" in array and array[-1].endswith("shards.sbatch")
    assert "--dependency=afterany:4242" in finish and any(a.endswith(",FINISH=1") for a in finish)
