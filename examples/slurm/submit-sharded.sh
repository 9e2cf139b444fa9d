#!/usr/bin/env bash
# One cube built by N SLURM tasks (shards.sbatch), then a finishing job that runs after all of
# them, whatever their exit (it completes the cube if the last task died before finishing it).
#
#   examples/slurm/submit-sharded.sh SECTOR CAMERA CCD N SOURCE DEST
set -euo pipefail
sector=${1:?usage: submit-sharded.sh SECTOR CAMERA CCD N SOURCE DEST}
camera=${2:?}; ccd=${3:?}; shards=${4:?}; source=${5:?}; dest=${6:?}
script="$(dirname "$0")/shards.sbatch"
vars="ALL,SECTOR=$sector,CAMERA=$camera,CCD=$ccd,SHARDS=$shards,SOURCE=$source,DEST=$dest"
array=$(sbatch --parsable --array="0-$((shards - 1))" --export="$vars" "$script")
sbatch --dependency="afterany:${array%%;*}" --export="$vars,FINISH=1" "$script"
