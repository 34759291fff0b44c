# Sourced by profile.sh and instructions.sh: sets `binary` and `commit` from their arguments, a bench
# binary and the commit it was built from (e.g. in a worktree), or else builds HEAD's. A build of a
# tree with uncommitted changes is named `<commit>-dirty`: its figures are not the commit's.
if [ $# -ge 2 ]; then
  binary=$1; commit=$2
else
  binary="${CARGO_TARGET_DIR:-$root/target}/release/bench"
  # Read before the build, as run.sh does: a file edited during it would otherwise go unnoticed.
  commit=$(git rev-parse --short=12 HEAD)
  [ -z "$(git status --porcelain --untracked-files=no -- . ':!bench/profiles')" ] || commit="$commit-dirty"
  cargo build --release --quiet -p bench
fi
