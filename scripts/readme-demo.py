"""README.md's demo section is docs/demo/report.md, abridged: the run it came from, and its Events,
Quarantine, Ingest and Compaction sections. `--check` fails when README.md is not what this would
write (make lint), so the README never shows a run other than the saved one."""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
START, END = "<!-- demo-report:start -->", "<!-- demo-report:end -->"


def abridged() -> str:
    report = (root / "docs/demo/report.md").read_text()
    header = re.match(r"<!-- Written by scripts/demo-report.sh: `(.*)` at commit (\w+) on ([\d-]+), (\d+) s", report)
    if not header:
        sys.exit("docs/demo/report.md has no scripts/demo-report.sh header")
    command, commit, date, seconds = header.groups()
    sections = re.split(r"^## ", report, flags=re.M)
    keep = [s for s in sections[1:] if s.split("\n", 1)[0].split(" (")[0] in ("Events", "Quarantine by reason", "Ingest", "Compaction")]
    body = "\n".join("#### " + s.rstrip() + "\n" for s in keep)
    return (
        f"The saved reference run (`scripts/demo-report.sh`): `{command}` at commit {commit} on {date}, "
        f"{seconds} s with the binaries already built, on this machine (2 cores, debug builds). Abridged: the "
        "full report, [docs/demo/report.md](docs/demo/report.md), also lists Parquet files and rows per day "
        "and language, the functions' metrics and a DuckDB query.\n\n" + body
    )


def main() -> None:
    readme_path = root / "README.md"
    readme = readme_path.read_text()
    before, rest = readme.split(START, 1)
    _, after = rest.split(END, 1)
    updated = f"{before}{START}\n{abridged()}{END}{after}"
    if "--check" in sys.argv:
        if updated != readme:
            sys.exit("README.md's demo section is not docs/demo/report.md: run python3 scripts/readme-demo.py")
        return
    readme_path.write_text(updated)


main()
