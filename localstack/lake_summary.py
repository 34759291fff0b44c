"""Summarises a downloaded processed/ tree with DuckDB, for the demo report (JSON on stdout).

    python lake_summary.py <directory containing processed/>
"""
import hashlib
import json
import pathlib
import sys

import duckdb

root = pathlib.Path(sys.argv[1])
glob = str(root / "processed" / "**" / "*.parquet")
out = {"partitions": [], "by_language_and_type": [], "rows": 0, "distinct_ids": 0,
       "ids_digest": format(0, "032x")}
if any(root.rglob("*.parquet")):
    con = duckdb.connect()
    lake = f"read_parquet('{glob}', hive_partitioning = true, filename = true)"
    out["partitions"] = [list(r) for r in con.execute(
        f"SELECT format('{{}}-{{}}-{{}}', year, month, day) AS day, coalesce(language, '(none)'), "
        f"count(DISTINCT filename), count(*) FROM {lake} GROUP BY ALL ORDER BY ALL").fetchall()]
    out["by_language_and_type"] = [list(r) for r in con.execute(
        f"SELECT coalesce(language, '(none)') AS language, event_type, count(*) AS events "
        f"FROM {lake} GROUP BY ALL ORDER BY language, event_type").fetchall()]
    out["rows"], out["distinct_ids"] = con.execute(
        f"SELECT count(*), count(DISTINCT event_uuid) FROM {lake}").fetchone()
    # The XOR of the MD5 of each distinct id: equal to the producer's ledger (events::ids_digest)
    # exactly when the lake holds the ids that were sent valid.
    digest = 0
    for (event_uuid,) in con.execute(f"SELECT DISTINCT event_uuid FROM {lake}").fetchall():
        digest ^= int(hashlib.md5(event_uuid.encode()).hexdigest(), 16)
    out["ids_digest"] = format(digest, "032x")
print(json.dumps(out))
