# Sourced by the check scripts: `skip WHAT WHY` reports a check that could not run. It is written to
# $SKIP_REPORT (which `make test` summarises at the end) and, under CI (CI=true), fails: a skipped
# check never passes CI.
skip() {
  echo "SKIPPED: $1 ($2)" >&2
  if [ -n "${SKIP_REPORT:-}" ]; then
    echo "$1: $2" >>"$SKIP_REPORT"
  fi
  if [ "${CI:-}" = "true" ]; then
    echo "CI=true: a skipped check is a failure" >&2
    exit 1
  fi
}
