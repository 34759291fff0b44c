"""make lint: every Rust file under 600 lines and every function under 100, except where EXEMPT says
why. Functions are found by their `fn` line and measured to the matching closing brace (strings,
characters and comments skipped)."""
import pathlib
import re
import sys

MAX_FILE_LINES = 600
MAX_FN_LINES = 100
# "path::function": why it stays long.
EXEMPT = {
    "tests/tests/compact.rs::both_binaries_end_to_end_read_back_by_pyarrow_and_duckdb":
        "one end-to-end story (ingest, then compact, then pyarrow and DuckDB read the lake back); "
        "its assertions follow the data through, and split up they would each need the whole set-up",
}

root = pathlib.Path(__file__).resolve().parent.parent
FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?fn\s+(\w+)")


def code_only(text):
    """The text with string and char literals and comments blanked, line breaks kept."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not text[i - 1].isalnum()):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + len(hashes) + 2)
            end = n if end < 0 else end + 1 + len(hashes)
            out.append("\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append("\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]) or text.startswith("'\\u{", i):
            j = text.find("'", i + 1 if text[i + 1] != "\\" else i + 3)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def long_functions(path):
    lines = code_only(path.read_text()).split("\n")
    found = []
    for start, line in enumerate(lines):
        match = FN.match(line)
        if not match:
            continue
        depth, opened = 0, False
        for end in range(start, len(lines)):
            if not opened and ";" in lines[end] and "{" not in lines[end]:
                break  # a declaration without a body
            depth += lines[end].count("{") - lines[end].count("}")
            opened = opened or "{" in lines[end]
            if opened and depth <= 0:
                length = end - start + 1
                if length > MAX_FN_LINES:
                    found.append((match.group(1), start + 1, length))
                break
    return found


problems = []
for path in sorted(root.glob("**/*.rs")):
    relative = path.relative_to(root).as_posix()
    if relative.startswith(("target/", ".venv/")) or "/target/" in relative:
        continue
    count = len(path.read_text().splitlines())
    if count > MAX_FILE_LINES and relative not in EXEMPT:
        problems.append(f"{relative}: {count} lines (at most {MAX_FILE_LINES})")
    for name, line, length in long_functions(path):
        if f"{relative}::{name}" not in EXEMPT:
            problems.append(f"{relative}:{line}: fn {name} is {length} lines (at most {MAX_FN_LINES})")
if problems:
    sys.exit("sizes (scripts/check-sizes.py; exempt one in EXEMPT with the reason):\n  " + "\n  ".join(problems))
print(f"sizes: every Rust file within {MAX_FILE_LINES} lines, every function within {MAX_FN_LINES} ({len(EXEMPT)} exempt, each with its reason)")
