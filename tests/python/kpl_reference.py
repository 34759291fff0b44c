"""KPL aggregates made by AWS Labs' own aggregation library (aws_kinesis_agg on PyPI), for the
tests that put them through the built `ingest`. Prints JSON:
{"aggregates": [{"name", "partition_key", "explicit_hash_key", "data_base64",
                 "user_records": [{"partition_key", "explicit_hash_key", "event_uuid"}]}]}
Usage: kpl_reference.py EVENTS_JSON   (a JSON list of event objects, one per user record, in order)
"""
import base64
import json
import sys

import aws_kinesis_agg
from aws_kinesis_agg.aggregator import AggRecord, RecordAggregator


def described(name, record, user_records):
    """The JSON of one finished aggregate and the user records it holds, in order."""
    partition_key, explicit_hash_key, data = record.get_contents()
    assert len(data) + len(partition_key.encode()) <= aws_kinesis_agg.MAX_BYTES_PER_RECORD
    return {
        "name": name,
        "partition_key": partition_key,
        "explicit_hash_key": explicit_hash_key,
        "data_base64": base64.b64encode(data).decode(),
        "user_records": [
            {"partition_key": key, "explicit_hash_key": hash_key, "event_uuid": event["event_uuid"]}
            for key, hash_key, event in user_records
        ],
    }


def encoded(event):
    return json.dumps(event, separators=(",", ":")).encode()


def aggregate(name, entries):
    """One aggregate of `entries` (partition key, explicit hash key or None, event), all of which
    must fit: the library says so."""
    record = AggRecord()
    for key, hash_key, event in entries:
        assert record.add_user_record(key, encoded(event), hash_key), f"{name}: user record did not fit"
    return described(name, record, entries)


def largest(name, events):
    """As many events as the library fits in one aggregate of its maximum size (1 MiB with the
    partition key, Kinesis' record limit): it hands the full one back when the next does not fit."""
    aggregator = RecordAggregator()
    used = []
    for n, event in enumerate(events):
        entry = (f"big-{n % 7}", None, event)
        full = aggregator.add_user_record(entry[0], encoded(event))
        if full is not None:
            return described(name, full, used)
        used.append(entry)
    raise SystemExit(f"{name}: {len(events)} events never filled an aggregate")


def main():
    events = json.load(open(sys.argv[1]))
    keys = ["user-17", "user-4", "user-17", "device-9", "user-4", "ключ-ü"]
    several_keys = [(keys[i], None, e) for i, e in enumerate(events[0:6])]
    hash_keys = ["0", "170141183460469231731687303715884105728", "340282366920938463463374607431768211455"]
    explicit = [(f"pk-{i}", hash_keys[i % 3], e) for i, e in enumerate(events[6:12])]
    print(json.dumps({
        "library": f"aws_kinesis_agg (max {aws_kinesis_agg.MAX_BYTES_PER_RECORD} bytes a record)",
        "aggregates": [
            aggregate("several partition keys", several_keys),
            aggregate("explicit hash keys", explicit),
            largest("the largest aggregate", events[12:]),
        ],
    }))


if __name__ == "__main__":
    main()
