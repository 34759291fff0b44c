"""The same ingest work as our CPU benchmark, done the straightforward Python way (json, base64,
datetime, uuid): decode, validate against the catalogue, deduplicate within the batch (in memory,
like our in-memory twin), transform, and serialise staging NDJSON grouped by minute and shard.

    python python_handler.py <payload.json> [iterations]
"""
import base64
import datetime
import json
import pathlib
import sys
import time
import uuid

CATALOGUE = json.loads((pathlib.Path(__file__).parent.parent / "events" / "catalogue.json").read_text())
TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,)}
EARLIEST = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)


def iso(dt):
    return dt.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def validate(raw, arrival):
    event = json.loads(raw.decode("utf-8"))
    if not isinstance(event, dict):
        raise ValueError("not_an_object")
    for field in ("event_uuid", "created_at", "event_name"):
        if field not in event:
            raise ValueError("missing_field")
    event_id = str(uuid.UUID(event["event_uuid"]))
    created = event["created_at"]
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        created = datetime.datetime.fromtimestamp(created, tz=datetime.timezone.utc)
    else:
        created = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
    if created < EARLIEST or created > arrival + datetime.timedelta(days=1):
        raise ValueError("created_at_out_of_range")
    event_type, _, subtype = event["event_name"].partition(":")
    spec = CATALOGUE["events"].get(event["event_name"])
    if spec is None:
        raise ValueError("unknown_event")
    specifics = event.get("event_specifics") or {}
    for name in spec["fields"]:
        value = specifics.get(name)
        if value is not None and not isinstance(value, TYPES[CATALOGUE["fields"][name]["type"]]):
            raise ValueError("wrong_field_type")
    return event_id, event["event_name"], event_type, subtype, created, specifics


def handler(event):
    staging, quarantine, seen = {}, {}, set()
    for record in event["Records"]:
        kinesis = record["kinesis"]
        raw = base64.b64decode(kinesis["data"])
        arrival = datetime.datetime.fromtimestamp(kinesis["approximateArrivalTimestamp"], tz=datetime.timezone.utc)
        shard = record["eventID"].rsplit(":", 1)[0]
        key = (arrival.strftime("%Y/%m/%d/%H/%M"), shard)
        try:
            event_id, name, event_type, subtype, created, specifics = validate(raw, arrival)
        except Exception as error:  # noqa: BLE001 - every failure is a quarantine reason
            quarantine.setdefault(key, []).append(json.dumps({
                "reason": str(error), "shard_id": shard, "sequence_number": kinesis["sequenceNumber"],
                "received_at": iso(arrival), "data_base64": base64.b64encode(raw).decode()}))
            continue
        if event_id in seen:
            continue
        seen.add(event_id)
        staging.setdefault(key, []).append(json.dumps({
            "event_uuid": event_id, "event_name": name, "event_type": event_type, "event_subtype": subtype,
            "created_at": iso(created), "received_at": iso(arrival), "event_specifics": specifics,
            "source": {"shard_id": shard, "sequence_number": kinesis["sequenceNumber"]}}))
    return {k: "\n".join(v) + "\n" for k, v in staging.items()}, quarantine


def main():
    payload = pathlib.Path(sys.argv[1]).read_bytes()
    iterations = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    records = len(json.loads(payload)["Records"])
    handler(json.loads(payload))
    started = time.perf_counter()
    for _ in range(iterations):
        handler(json.loads(payload))
    seconds = (time.perf_counter() - started) / iterations
    print(json.dumps({"records": records, "iterations": iterations, "seconds_per_batch": seconds, "records_per_second": records / seconds,
                      "megabytes_per_second": len(payload) / seconds / 1e6}))


if __name__ == "__main__":
    main()
