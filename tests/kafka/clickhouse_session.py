"""Runs SQL statements in one chdb (ClickHouse in-process) session, so a
CREATE TABLE, an INSERT and the SELECTs after them see the same database.

stdin: a JSON list of SQL strings (each one statement). stdout: a JSON
list with, per statement, {"ok": "<TabSeparated result>"} or
{"error": "<message>"}; statements after a failed one still run.

Used by tests/kafka.rs (the shipped MergeTree DDL and the view's ingestion
query over consumed Kafka messages); needs chdb.
"""
import json
import sys
import tempfile

from chdb import session

results = []
with tempfile.TemporaryDirectory() as path:
    s = session.Session(path)
    for sql in json.load(sys.stdin):
        try:
            results.append({"ok": str(s.query(sql, "TSV"))})
        except Exception as e:  # report every failing statement
            results.append({"error": str(e)})
    s.close()
json.dump(results, sys.stdout)
