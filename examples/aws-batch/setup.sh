#!/usr/bin/env bash
# One-time setup of fficube's AWS Batch recipe (README.md, "Whole sectors: AWS Batch and
# clusters"): a launch template that mounts instance NVMe at /scratch, two spot compute
# environments (direct builds; staged builds on NVMe), their job queues and job definitions.
#
# First edit the placeholders in the JSON files (subnet, security group, ACCOUNT, MY-BUCKET)
# and push the image built from ./Dockerfile to ECR as ACCOUNT.dkr.ecr.REGION.amazonaws.com/fficube.
#
#   examples/aws-batch/setup.sh
set -euo pipefail
cd "$(dirname "$0")"
aws ec2 create-launch-template --launch-template-name fficube-nvme \
  --launch-template-data "{\"UserData\": \"$(base64 -w0 nvme-user-data.txt)\"}"
aws batch create-compute-environment --cli-input-json file://compute-environment.json
aws batch create-compute-environment --cli-input-json file://compute-environment-nvme.json
for environment in fficube-spot fficube-nvme-spot; do  # a queue needs its environment VALID
  until [ "$(aws batch describe-compute-environments --compute-environments "$environment" \
             --query 'computeEnvironments[0].status' --output text)" = VALID ]; do
    sleep 5
  done
done
aws batch create-job-queue --cli-input-json file://job-queue.json
aws batch create-job-queue --cli-input-json file://job-queue-nvme.json
aws batch register-job-definition --cli-input-json file://job-definition.json
aws batch register-job-definition --cli-input-json file://job-definition-staged.json
