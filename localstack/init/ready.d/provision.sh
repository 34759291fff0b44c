#!/bin/sh
# LocalStack ready hook: create the bucket, dedup table and stream with the same code the embedded
# (moto) path uses.
set -eu
export AWS_ENDPOINT_URL=http://localhost:4566 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
/opt/pipeline/demo --provision-only
