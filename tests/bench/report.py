#!/usr/bin/env python3
"""Markdown tables from the JSON lines of one scripts/bench run, for the
README's Performance section:

    python3 tests/bench/report.py bench/results.jsonl

Every figure comes from that file; the targets are issue 16's, checked
against this run's numbers only."""
import json
import statistics
import sys


def fmt(n):
    return f"{n:,}" if isinstance(n, int) else f"{n}"


def main(path):
    rows = [json.loads(line) for line in open(path)]
    machine = next(r for r in rows if r.get("kind") == "machine")
    summary = next(r for r in rows if r.get("kind") == "summary")
    aggs = {r["scenario"]: r for r in rows if r.get("kind") == "aggregate"}
    runs = {}
    for r in rows:
        if "scenario" in r and "kind" not in r:
            runs.setdefault(r["scenario"], []).append(r)
    out = []
    w = out.append
    w(f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['mem_gb']} GB, kernel "
      f"{machine['kernel']}, {machine.get('nats_server', '')}"
      + (f", node {machine['node']}" if "node" in machine else "")
      + (f", nats-server GOMAXPROCS {machine['nats_gomaxprocs']}"
         if "nats_gomaxprocs" in machine else "")
      + f"; {machine['reps']} interleaved repetitions; load average (1/5/15 min) "
      f"{summary['loadavg_start']} at the start, {summary['loadavg_end']} at the end.")
    w("")
    w("| scenario | records | runs | records/s min / **median** / max | seconds (median) "
      "| CPU µs per record, all processes | of which saver | peak RSS MB fetcher / mapper / saver |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    names = {"original-1": "original, 1 mapper (sleep removed)",
             "original-2": "original, 2 mappers (sleep removed)",
             "a": "a: `fullname`, 2 mappers", "b": "b: `identity`, 2 mappers",
             "c": "c: `sleep:100`, 2 × 20 workers", "js": "js: JetStream transport only",
             "d-small": "d-small: `fullname`", "d-big": "d-big: `fullname`"}
    for k, a in aggs.items():
        rp = a["records_per_s"]
        rs = runs.get(k, [])
        rss = "–"
        if rs and "peak_rss_mb" in rs[0]:
            rss = " / ".join(str(max(r["peak_rss_mb"][f] or 0 for r in rs))
                             for f in ("fetcher", "mapper_max", "saver"))
        w(f"| {names.get(k, k)} | {fmt(a['records'])} | {a['runs']} | {fmt(rp['min'])} / "
          f"**{fmt(rp['median'])}** / {fmt(rp['max'])} | {a['seconds']['median']} | "
          f"{a.get('cpu_us_per_record_median', '–')} | {a.get('saver_cpu_us_per_record_median', '–')} "
          f"| {rss} |")
    byp = {k: a["cpu_us_per_record_by_process_median"] for k, a in aggs.items()
           if a.get("cpu_us_per_record_by_process_median") and not k.startswith("original-")}
    if byp:
        procs = ["fetcher", "mappers", "saver", "nats_server"]
        w("")
        w("CPU µs per record by process (median over the runs; mappers: all together):")
        w("")
        w("| scenario | " + " | ".join(procs) + " |")
        w("| --- |" + " ---: |" * len(procs))
        for k, v in byp.items():
            w(f"| {names.get(k, k)} | " + " | ".join(str(v.get(p, "–")) for p in procs) + " |")
    stages = [r for r in rows if r.get("scenario", "").count("-stage-")]
    if stages:
        w("")
        w("Stage limits (cmbench, once each, same run):")
        w("")
        w("| stage | records | seconds | CPU s | records/s |")
        w("| --- | ---: | ---: | ---: | ---: |")
        for s in stages:
            w(f"| {s['scenario']} ({s['transform']}) | {fmt(s['records'])} | {s['seconds']} | "
              f"{s.get('cpu_s', '–')} | {fmt(s['records_per_s'])} |")
    w("")
    w("Targets (issue 16), against this run:")
    w("")
    w("| target | this run | met? |")
    w("| --- | --- | --- |")

    def med(k):
        return aggs[k]["records_per_s"]["median"] if k in aggs else None

    if med("a") and med("original-1"):
        best = max(med(k) for k in aggs if k.startswith("original-"))
        r = med("a") / best
        w(f"| a ≥ 10× the original (same run, process start included) | {fmt(med('a'))} vs the "
          f"original's best median {fmt(best)} rec/s = **{r:.1f}×** | {'yes' if r >= 10 else 'no'} |")
    elif med("a"):
        w("| a ≥ 10× the original | original: not measured | – |")
    if med("b"):
        w(f"| b ≥ 250,000 records/s | {fmt(med('b'))} | {'yes' if med('b') >= 250000 else 'no'} |")
        cpu = aggs["b"].get("cpu_us_per_record_median")
        sv = aggs["b"].get("saver_cpu_us_per_record_median")
        w(f"| b ≤ 8 µs CPU per record, whole pipeline | {cpu} µs | {'yes' if cpu <= 8 else 'no'} |")
        w(f"| b: saver ≤ 2.5 µs per record | {sv} µs | {'yes' if sv <= 2.5 else 'no'} |")
    if med("b") and med("js"):
        r = med("b") / med("js")
        w(f"| b ≥ 0.8 of JetStream transport only | {fmt(med('b'))} / {fmt(med('js'))} = "
          f"**{r:.2f}** | {'yes' if r >= 0.8 else 'no'} |")
    elif "js" in summary:
        w(f"| b ≥ 0.8 of JetStream transport only | {summary['js']} | – |")
    if "c" in runs:
        eff = statistics.median(r["parallel_efficiency"] for r in runs["c"])
        allv = ", ".join(str(r["parallel_efficiency"]) for r in runs["c"])
        w(f"| c parallel efficiency ≥ 0.95 | median {eff} ({allv}) | {'yes' if eff >= 0.95 else 'no'} |")
    if "d_fetcher_peak_rss_mb" in summary:
        f1, f2 = summary["d_fetcher_peak_rss_mb"]
        n1, n2 = summary["d_records"]
        w(f"| fetcher peak RSS flat within 1 MB, {fmt(n1)} → {fmt(n2)} records | {f1} → {f2} MB "
          f"| {'yes' if f2 - f1 <= 1 else 'no'} |")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
