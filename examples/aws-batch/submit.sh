#!/usr/bin/env bash
# Build every cube of a sector with one AWS Batch array job of 16 children.
# Child i builds camera i // 4 + 1, CCD i % 4 + 1 (fficube reads AWS_BATCH_JOB_ARRAY_INDEX).
#
#   examples/aws-batch/submit.sh SECTOR s3://MY-BUCKET/tess/cubes
#
# One-time setup (see README.md, "AWS Batch"): push the image built from ./Dockerfile to
# ECR, then create the compute environment, the job queue and the job definition:
#   aws batch create-compute-environment --cli-input-json file://compute-environment.json
#   aws batch create-job-queue --cli-input-json file://job-queue.json
#   aws batch register-job-definition --cli-input-json file://job-definition.json
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
# running this again later skips the cubes that are already complete.
