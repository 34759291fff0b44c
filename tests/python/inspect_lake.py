"""Reads a downloaded processed/ tree with independent readers (pyarrow and DuckDB) and prints one
JSON document the Rust integration tests assert on.

    python inspect_lake.py <root containing processed/>
"""
import json
import pathlib
import sys

import duckdb
import pyarrow.parquet as pq

root = pathlib.Path(sys.argv[1])
files = sorted(root.rglob("*.parquet"))
out = {"files": [], "rows": [], "duckdb": {}}
for path in files:
    table = pq.read_table(path, partitioning=None)
    meta = pq.ParquetFile(path).metadata
    out["files"].append({
        "path": str(path.relative_to(root)),
        "rows": table.num_rows,
        "row_groups": meta.num_row_groups,
        "compression": meta.row_group(0).column(0).compression if meta.num_row_groups else None,
        "schema": {f.name: str(f.type) for f in table.schema},
        "nullable": {f.name: f.nullable for f in table.schema},
    })
    for row in table.to_pylist():
        row["created_at"] = row["created_at"].isoformat()
        row["received_at"] = row["received_at"].isoformat()
        row["_file"] = str(path.relative_to(root))
        out["rows"].append(row)

if files:
    glob = str(root / "processed" / "**" / "*.parquet")
    con = duckdb.connect()
    out["duckdb"]["per_partition"] = [
        list(r) for r in con.execute(
            "SELECT year, month, day, language, count(*) FROM read_parquet(?, hive_partitioning = true) "
            "GROUP BY ALL ORDER BY ALL", [glob]).fetchall()
    ]
    # The README's Athena queries, as DuckDB spells them over the same layout: the default
    # partition's folder reads as NULL.
    lake = "read_parquet(?, hive_partitioning = true)"
    out["duckdb"]["readme_query"] = [
        list(r) for r in con.execute(
            f"SELECT language, event_type, count(*) FROM {lake} "
            "WHERE year = 2024 AND month = 4 AND day = 11 GROUP BY 1, 2 ORDER BY ALL", [glob]).fetchall()
    ]
    out["duckdb"]["no_language"] = con.execute(
        f"SELECT count(*) FROM {lake} WHERE language IS NULL", [glob]).fetchone()[0]
    out["duckdb"]["distinct_ids"] = con.execute(
        "SELECT count(DISTINCT event_uuid), count(*) FROM read_parquet(?)", [glob]).fetchone()
print(json.dumps(out, default=str))
