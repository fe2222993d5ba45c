"""Runs SQL against chdb (ClickHouse in-process) for tests/clickhouse.rs.

stdin: a JSON list of SQL strings. stdout: a JSON list with, per query,
{"ok": "<TabSeparated result>"} or {"error": "<message>"}.
Exit code 3 when chdb cannot be imported (the Rust test checks that first,
through support::require_python_module, so here it is a failure).
"""
import json
import sys

try:
    import chdb
except ImportError as e:  # the caller checked; say why it fails anyway
    print(f"chdb is not importable: {e}", file=sys.stderr)
    sys.exit(3)

results = []
for sql in json.load(sys.stdin):
    try:
        results.append({"ok": str(chdb.query(sql, "TSV"))})
    except Exception as e:  # report every failing query, not just the first
        results.append({"error": str(e)})
json.dump(results, sys.stdout)
