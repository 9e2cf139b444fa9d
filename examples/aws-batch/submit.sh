#!/usr/bin/env bash
# Build every cube of a sector with one AWS Batch array job of 16 children, S3 -> S3.
# Child i builds camera i // 4 + 1, CCD i % 4 + 1 (fficube reads AWS_BATCH_JOB_ARRAY_INDEX).
# For a prime-mission or 10-minute sector; for 200-second sectors use submit-staged.sh.
#
#   examples/aws-batch/submit.sh SECTOR s3://MY-BUCKET/tess/cubes
#
# One-time setup: setup.sh (see README.md, "Whole sectors: AWS Batch and clusters").
set -euo pipefail
sector=${1:?usage: submit.sh SECTOR DEST}
dest=${2:?usage: submit.sh SECTOR DEST}
aws batch submit-job \
  --job-name "fficube-s$(printf %04d "$sector")" \
  --job-queue fficube \
  --job-definition fficube-sector \
  --array-properties size=16 \
  --parameters "sector=$sector,dest=$dest"
# A retried child (spot reclaim, SIGTERM) resumes its cube from the journal beside it;
# running this again later skips the cubes that are complete at the destination.
