#!/usr/bin/env bash
# One large cube (200-second sectors: several hundred GB) built by N workers at once.
# Child K of the array builds the K-th window of the cube's bytes (--shard index/N) and
# uploads its parts into one shared multipart upload; exactly one child, the first to find
# every window done, completes the cube (the others wait for it and exit 0). A final job,
# run after all children, completes it if the last child died before it could.
#
#   examples/aws-batch/submit-sharded.sh SECTOR CAMERA CCD N s3://MY-BUCKET/tess/cubes
set -euo pipefail
sector=${1:?usage: submit-sharded.sh SECTOR CAMERA CCD N DEST}
camera=${2:?}; ccd=${3:?}; shards=${4:?}; dest=${5:?}
common=(sector "$sector" --source s3://stpubdata/tess/public/ffi --anon --dest "$dest"
        --camera "$camera" --ccd "$ccd" --max-memory 12GB)
array=$(aws batch submit-job \
  --job-name "fficube-s$(printf %04d "$sector")-$camera-$ccd-shards" \
  --job-queue fficube --job-definition fficube-sector \
  --array-properties "size=$shards" \
  --container-overrides "command=$(printf '%s,' "${common[@]}" --shard "index/$shards" | sed 's/,$//')" \
  --query jobId --output text)
aws batch submit-job \
  --job-name "fficube-s$(printf %04d "$sector")-$camera-$ccd-finish" \
  --job-queue fficube --job-definition fficube-sector \
  --depends-on "jobId=$array" \
  --container-overrides "command=$(printf '%s,' "${common[@]}" --finish | sed 's/,$//')"
