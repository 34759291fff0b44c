"""One staging day → Parquet partitioned by year/month/day/language with DuckDB
(COPY … TO … (FORMAT parquet, PARTITION_BY …)), with the same columns and the same redelivery
removal as our compactor, minus extra_specifics.

    python duckdb_compact.py <root with staging/> <out dir> [threads, default 2]
"""
import json
import pathlib
import sys
import time

import duckdb

root, out = pathlib.Path(sys.argv[1]), sys.argv[2]
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
catalogue = json.loads((pathlib.Path(__file__).parent.parent / "events" / "catalogue.json").read_text())
sql_type = {"string": "VARCHAR", "integer": "BIGINT", "number": "DOUBLE", "boolean": "BOOLEAN"}
fields = ",\n".join(
    f"TRY_CAST(json_extract(event_specifics, '$.{name}') AS {sql_type[f['type']]}) AS {name}"
    if f["type"] != "string" else f"json_extract_string(event_specifics, '$.{name}') AS {name}"
    for name, f in sorted(catalogue["fields"].items()))
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
started = time.perf_counter()
con.execute(f"""
COPY (
  SELECT event_uuid, event_name, event_type, event_subtype,
         created_at::TIMESTAMPTZ AS created_at, received_at::TIMESTAMPTZ AS received_at,
         {fields},
         year(created_at::TIMESTAMPTZ) AS year, lpad(month(created_at::TIMESTAMPTZ)::VARCHAR, 2, '0') AS month,
         lpad(day(created_at::TIMESTAMPTZ)::VARCHAR, 2, '0') AS day,
         coalesce(json_extract_string(event_specifics, '$.language_id'), '__HIVE_DEFAULT_PARTITION__') AS language
  FROM read_ndjson('{root}/staging/**/*.ndjson', columns = {{
         event_uuid: 'VARCHAR', event_name: 'VARCHAR', event_type: 'VARCHAR', event_subtype: 'VARCHAR',
         created_at: 'VARCHAR', received_at: 'VARCHAR', event_specifics: 'JSON',
         source: 'STRUCT(shard_id VARCHAR, sequence_number VARCHAR, sub_sequence_number INTEGER)'}})
  QUALIFY row_number() OVER (PARTITION BY source.shard_id, source.sequence_number, source.sub_sequence_number) = 1
) TO '{out}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (year, month, day, language), OVERWRITE_OR_IGNORE)
""")
seconds = time.perf_counter() - started
rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}/**/*.parquet')").fetchone()[0]
size = sum(p.stat().st_size for p in pathlib.Path(out).rglob("*.parquet"))
print(json.dumps({"seconds": seconds, "rows": rows, "parquet_bytes": size, "threads": threads}))
