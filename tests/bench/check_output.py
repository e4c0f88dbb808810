#!/usr/bin/env python3
"""Checks the JSON lines of a scripts/bench run (bench_quick): every line is
JSON, the last is the summary, every chunkmill run reports the exact rows it
counted in its results database, and with no --original the summary says
the original was not measured instead of a ratio."""
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1])]
assert rows and rows[-1]["kind"] == "summary", rows[-1:]
runs = [r for r in rows if "scenario" in r and "saved" in r and "rows" in r["saved"]]
assert runs, "no chunkmill run with counted rows"
for r in runs:
    assert r["saved"]["rows"] == r["records"] == r["saved"]["distinct_keys"], r
summary = rows[-1]
if not any(r.get("scenario", "").startswith("original-") for r in rows):
    assert summary.get("original", "").startswith("not measured"), summary
    assert not any(k.startswith("a_vs_original") for k in summary), summary
print(len(rows), "JSON objects;", len(runs), "runs with exact rows")
print(summary)
