#!/usr/bin/env bash
# make lint: each binary compiles only what it needs (the shared crate's features, shared/src/lib.rs).
# `ingest` and `redrive` compile no Arrow or Parquet, the producer no AWS SDK but Kinesis's, and no
# Lambda binary the test-only modules (`test-util`). Reads the lock file; compiles nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
# Normal dependencies of a package (features as that package alone enables them).
tree() { cargo tree --offline --quiet -p "$1" -e normal --prefix none --format '{p}' 2>/dev/null | awk '{print $1}' | sort -u; }
features() { cargo tree --offline --quiet -p "$1" -e normal,features -i event-pipeline --prefix none 2>/dev/null; }
refuse() { # package, pattern, why
  local found
  found=$(tree "$1" | grep -E "$2" || true)
  if [ -n "$found" ]; then echo "check-deps: $1 compiles $(echo $found | tr '\n' ' ')— $3"; fail=1; fi
}
refuse ingest '^(arrow|parquet|zstd)' 'ingest writes NDJSON; only compact needs the lake feature'
refuse redrive '^(arrow|parquet|zstd)' 'redrive goes through ingest; it needs no lake'
refuse events '^aws-sdk-(s3|dynamodb|cloudwatch|glue)$' 'the producer talks to Kinesis only'
for binary in ingest compact; do
  if features "$binary" | grep -q '"test-util"'; then
    echo "check-deps: $binary ships the shared crate's test-util modules"; fail=1
  fi
done
[ "$fail" = 0 ] && echo "check-deps: ingest and redrive without Arrow/Parquet, the producer without the S3/DynamoDB/CloudWatch SDKs, no test-util in the Lambda binaries"
exit "$fail"
