#!/usr/bin/env bash
# Build every cube of a sector with one AWS Batch array job of 16 children, each staged:
# the child copies its camera/CCD's FFIs whole onto the instance's NVMe (--stage, a few
# 8-16 MiB GETs per FFI instead of one GET per FFI per block), then builds from the copies
# and uploads the cube. For 200-second sectors (12,000 FFIs: 1.9 M small GETs per cube direct).
#
#   examples/aws-batch/submit-staged.sh SECTOR s3://MY-BUCKET/tess/cubes
#
# One-time setup: setup.sh (the NVMe compute environment, its queue and job definition).
set -euo pipefail
sector=${1:?usage: submit-staged.sh SECTOR DEST}
dest=${2:?usage: submit-staged.sh SECTOR DEST}
aws batch submit-job \
  --job-name "fficube-s$(printf %04d "$sector")-staged" \
  --job-queue fficube-staged \
  --job-definition fficube-sector-staged \
  --array-properties size=16 \
  --parameters "sector=$sector,dest=$dest"
# A retried child on the same instance reuses the copies that are complete (checked against
# the listing's size and ETag); the copies are removed once its cube is built.
