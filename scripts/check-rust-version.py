"""Fails when the workspace's declared rust-version is below what a locked dependency declares:
the README and Cargo.toml then promise a Rust that cannot build the project. Run by `make lint`."""
import json
import subprocess
import sys

metadata = json.loads(subprocess.run(
    ["cargo", "metadata", "--format-version", "1", "--locked"],
    check=True, capture_output=True, text=True).stdout)
members = set(metadata["workspace_members"])


def version(text):
    return tuple(int(part) for part in text.split("."))


declared = {p["name"]: p["rust_version"] for p in metadata["packages"] if p["id"] in members}
floor = min(version(v) for v in declared.values() if v)
needed = max((version(p["rust_version"]), p["name"], p["version"]) for p in metadata["packages"]
             if p.get("rust_version") and p["id"] not in members)
if needed[0] > floor:
    sys.exit(f"rust-version {'.'.join(map(str, floor))} is declared, but {needed[1]} {needed[2]} "
             f"needs {'.'.join(map(str, needed[0]))}: raise workspace.package.rust-version (and the README)")
print(f"rust-version {'.'.join(map(str, floor))}: every locked dependency builds with it "
      f"(the most demanding, {needed[1]} {needed[2]}, needs {'.'.join(map(str, needed[0]))})")
