"""Says whether the saved figures still describe the code: the commits bench/results.json
(BENCHMARKS.md) and docs/demo/counts.json (README's demo section) measured, and which measured
sources changed since. A notice, not a failure: re-run `make bench` or scripts/demo-report.sh."""
import json
import pathlib
import subprocess

root = pathlib.Path(__file__).resolve().parent.parent
MEASURED = ["shared", "functions", "bench/src", "events", "localstack", "Cargo.lock", "Cargo.toml"]


def changed_since(commit: str) -> list:
    result = subprocess.run(
        ["git", "diff", "--name-only", commit, "HEAD", "--", *MEASURED],
        cwd=root, capture_output=True, text=True,
    )
    if result.returncode != 0:
        return [f"(commit {commit} is not in this clone's history)"]
    return [line for line in result.stdout.splitlines() if line]


for what, path, commit_of in (
    ("BENCHMARKS.md", "bench/results.json", lambda d: d["measured"]["commit"]),
    ("README's demo report", "docs/demo/counts.json", lambda d: d["run"]["commit"]),
):
    commit = commit_of(json.loads((root / path).read_text()))
    changed = changed_since(commit)
    if changed:
        print(f"figures: {what} measured commit {commit}; {len(changed)} measured files changed since "
              f"({', '.join(changed[:4])}{', …' if len(changed) > 4 else ''})")
    else:
        print(f"figures: {what} measured commit {commit}, and describes the code as it is")
