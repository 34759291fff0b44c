# Sourced by profile.sh and instructions.sh: sets `binary` and `commit` from their arguments, a bench
# binary and the commit it was built from (e.g. in a worktree), or else builds HEAD's.
if [ $# -ge 2 ]; then
  binary=$1; commit=$2
else
  cargo build --release --quiet -p bench
  binary="${CARGO_TARGET_DIR:-$root/target}/release/bench"
  commit=$(git rev-parse --short=12 HEAD)
fi
