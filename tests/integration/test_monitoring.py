#!/usr/bin/env python3
"""The Grafana dashboard and the PrometheusRule alerts in
k8s/components/monitoring/ query only metrics the daemons really serve
(issue 15).

A short real pipeline (nats-server, saver, mapper, fetcher) runs a job; the
/metrics of every daemon is scraped and parsed; every metric name in the
dashboard's queries (panel targets and template variables) and in the rules'
expressions must be among the real sample names (a histogram's _bucket, _sum
and _count must belong to a histogram). The rules file must have the
Prometheus rules structure, and `promtool check rules` (Debian: prometheus)
must accept it and the dashboard's expressions; without promtool that part is
skipped with a note and the structure check still runs. The checker is shown
to fail on a renamed metric.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.dirname(__file__))
import harness as h  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MON = os.path.join(ROOT, "k8s", "components", "monitoring")
DASHBOARD = os.path.join(MON, "chunkmill-dashboard.json")
RULES = os.path.join(MON, "prometheusrule.yaml")

IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
QUOTED = re.compile(r'"(\\.|[^"\\])*"|\'(\\.|[^\'\\])*\'|`[^`]*`')
HIST_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr):
    """The chunkmill_ metric names a PromQL expression (or a Grafana
    label_values() query) reads: every chunkmill_ identifier outside string
    literals that is not a function call. Label names never start with
    chunkmill_, so what remains is a metric name, whether it stands before
    `{`, `[`, `)`, `,` or an operator."""
    text = QUOTED.sub('""', expr)
    names = set()
    for m in IDENT.finditer(text):
        word = m.group(0)
        rest = text[m.end():].lstrip()
        if word.startswith("chunkmill_") and not rest.startswith("("):
            names.add(word)
    return names


def dashboard_exprs(dash):
    out = []

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append((f"panel {p.get('title')!r} {t.get('refId')}", t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query" and q:
            out.append((f"variable {v.get('name')}", q))
    return out


def rule_docs():
    with open(RULES) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def rules_exprs(docs):
    return [(f"rule {r.get('alert') or r.get('record')}", r["expr"])
            for d in docs for g in d["spec"]["groups"] for r in g["rules"]]


def rules_structure_errors(docs):
    """The Prometheus rules format (as promtool reads it) inside a
    PrometheusRule: spec.groups[] with a unique name and rules[], each rule an
    alert (or record) with an expr, an optional `for` duration, and string
    labels and annotations."""
    errs = []
    dur = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
    if len(docs) != 1:
        errs.append(f"{len(docs)} documents, want one PrometheusRule")
    for d in docs:
        if d.get("apiVersion") != "monitoring.coreos.com/v1" or d.get("kind") != "PrometheusRule":
            errs.append(f"not a monitoring.coreos.com/v1 PrometheusRule: {d.get('apiVersion')} {d.get('kind')}")
        if not (d.get("metadata") or {}).get("name"):
            errs.append("metadata.name missing")
        groups = (d.get("spec") or {}).get("groups")
        if not isinstance(groups, list) or not groups:
            errs.append("spec.groups missing or empty")
            continue
        seen = set()
        for g in groups:
            if not isinstance(g, dict) or not g.get("name"):
                errs.append(f"group without a name: {g!r}")
                continue
            if g["name"] in seen:
                errs.append(f"group {g['name']} twice")
            seen.add(g["name"])
            extra = set(g) - {"name", "interval", "rules", "limit", "partial_response_strategy"}
            if extra:
                errs.append(f"group {g['name']}: unknown fields {sorted(extra)}")
            if not isinstance(g.get("rules"), list) or not g["rules"]:
                errs.append(f"group {g['name']}: no rules")
                continue
            for r in g["rules"]:
                what = r.get("alert") or r.get("record")
                if ("alert" in r) == ("record" in r):
                    errs.append(f"{what}: needs exactly one of alert/record")
                extra = set(r) - {"alert", "record", "expr", "for", "keep_firing_for", "labels",
                                  "annotations"}
                if extra:
                    errs.append(f"{what}: unknown fields {sorted(extra)}")
                if not isinstance(r.get("expr"), str) or not r["expr"].strip():
                    errs.append(f"{what}: expr missing")
                if "for" in r and not (isinstance(r["for"], str) and dur.match(r["for"])):
                    errs.append(f"{what}: for {r['for']!r} is not a duration")
                for key in ("labels", "annotations"):
                    m = r.get(key, {})
                    if not isinstance(m, dict) or not all(
                            isinstance(k, str) and isinstance(v, str) for k, v in m.items()):
                        errs.append(f"{what}: {key} must map strings to strings")
                if "alert" in r:
                    if "severity" not in r.get("labels", {}):
                        errs.append(f"{what}: no severity label")
                    if not r.get("annotations", {}).get("summary"):
                        errs.append(f"{what}: no summary annotation")
    return errs


def missing_metrics(exprs, samples, types):
    """[(where, name)] for every queried name the daemons do not serve."""
    served = {k.split("{", 1)[0] for k in samples}
    missing = []
    for where, expr in exprs:
        for name in sorted(metric_names(expr)):
            ok = name in served
            for suf in HIST_SUFFIXES:
                if name.endswith(suf) and name[:-len(suf)] in types:
                    ok = ok and types[name[:-len(suf)]] == "histogram"
            if not ok:
                missing.append((where, name))
    return missing


def scrape(pipeline):
    samples, types = {}, {}
    procs = [pipeline.fetcher, pipeline.saver] + pipeline.mappers
    for p in procs:
        st, body = h.http_get(p.port, "/metrics", timeout=5)
        assert st == 200, f"{p.name} /metrics: {st} {body}"
        s, t = h.parse_prometheus(body)
        samples.update(s)
        for k, v in t.items():
            assert types.get(k, v) == v, f"{k} is a {v} in {p.name} but a {types[k]} elsewhere"
            types[k] = v
    return samples, types


def test_queried_metrics_exist():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    docs = rule_docs()
    d_exprs, r_exprs = dashboard_exprs(dash), rules_exprs(docs)
    d_names = set().union(*(metric_names(e) for _, e in d_exprs))
    r_names = set().union(*(metric_names(e) for _, e in r_exprs))
    # What the issue asks the two to show, by the metric that shows it.
    for want in ("chunkmill_saver_records_saved_total", "chunkmill_backlog_chunks",
                 "chunkmill_fetcher_inflight_chunks",
                 "chunkmill_fetcher_chunk_latency_seconds_bucket",
                 "chunkmill_fetcher_dead_chunks_total", "chunkmill_mapper_chunks_total",
                 "chunkmill_saver_commit_seconds_bucket", "chunkmill_nats_connected",
                 "chunkmill_nats_reconnects_total"):
        assert want in d_names, f"the dashboard does not show {want}"
    assert "histogram_quantile" in json.dumps(dash), "no latency quantiles in the dashboard"
    for want in ("chunkmill_fetcher_chunks_acked_total", "chunkmill_oldest_pending_age_seconds",
                 "chunkmill_fetcher_dead_chunks_total", "chunkmill_ready",
                 "chunkmill_nats_connected"):
        assert want in r_names, f"no alert reads {want}"

    p = h.Pipeline("monitoring", records=3000, mappers=2, chunk_size=100)
    try:
        p.wait_ready([p.saver] + p.mappers)
        f = p.start_fetcher()
        p.wait_ready([f])
        h.wait_until(lambda: (p.db_query("SELECT count(*) FROM records")[0][0] == 3000), 60,
                     what="3000 records saved")
        samples, types = scrape(p)
        # The job ran: the metrics carry its numbers, not just their names.
        assert samples.get("chunkmill_saver_records_saved_total") == 3000, samples.get(
            "chunkmill_saver_records_saved_total")
        assert samples.get('chunkmill_ready{role="saver"}') == 1, "a ready saver has chunkmill_ready 0"
        missing = missing_metrics(d_exprs + r_exprs, samples, types)
        assert not missing, "queried but not served: " + ", ".join(f"{n} ({w})" for w, n in missing)

        # The check can fail: a renamed metric in either file is reported.
        renamed = [("panel x", d_exprs[0][1].replace("chunkmill_fetcher_done_chunks",
                                                      "chunkmill_fetcher_chunks_done"))]
        assert missing_metrics(renamed, samples, types) == [("panel x",
                                                             "chunkmill_fetcher_chunks_done")]
        renamed = [("rule y", "histogram_quantile(0.9, rate(chunkmill_saver_commit_seconds_bucket[5m]))"
                    " > chunkmill_saver_records_saved_total_bucket")]
        assert missing_metrics(renamed, samples, types) == [
            ("rule y", "chunkmill_saver_records_saved_total_bucket")]
    except Exception:
        h.dump_logs_on_failure(p)
        raise
    finally:
        p.stop_all()


def test_rules_valid():
    docs = rule_docs()
    errs = rules_structure_errors(docs)
    assert not errs, "; ".join(errs)
    # The structure check can fail.
    bad = yaml.safe_load(yaml.safe_dump(docs[0]))
    r0 = bad["spec"]["groups"][0]["rules"][0]
    r0["for"] = "ten minutes"
    del r0["expr"]
    r0["annotation"] = {}
    errs = rules_structure_errors([bad])
    assert any("not a duration" in e for e in errs) and any("expr missing" in e for e in errs) \
        and any("unknown fields" in e for e in errs), errs


def test_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        print("NOTE: promtool not found (Debian: apt-get install prometheus): "
              "PromQL syntax not checked, structure checked in test_rules_valid")
        return
    work = h.tmpdir("cm-promtool-")
    rules = os.path.join(work, "rules.yaml")
    with open(rules, "w") as f:
        yaml.safe_dump(rule_docs()[0]["spec"], f)
    r = subprocess.run([promtool, "check", "rules", rules], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, f"promtool check rules: {r.stdout}{r.stderr}"
    # The dashboard's expressions, with Grafana's variables filled in, as
    # recording rules: promtool parses each one.
    with open(DASHBOARD) as f:
        exprs = [e for _, e in dashboard_exprs(json.load(f)) if not e.startswith("label_values(")]
    rec = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"chunkmill:dashboard_{i}",
         "expr": e.replace("$__rate_interval", "1m").replace("$namespace", "chunkmill")}
        for i, e in enumerate(exprs)]}]}
    with open(rules, "w") as f:
        yaml.safe_dump(rec, f)
    r = subprocess.run([promtool, "check", "rules", rules], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, f"promtool on the dashboard's expressions: {r.stdout}{r.stderr}"
    # promtool itself rejects a broken expression.
    rec["groups"][0]["rules"][0]["expr"] = "sum(rate(chunkmill_backlog_chunks[5m])"
    with open(rules, "w") as f:
        yaml.safe_dump(rec, f)
    r = subprocess.run([promtool, "check", "rules", rules], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0, "promtool accepted an unbalanced expression"


if __name__ == "__main__":
    h.check("dashboard and rules query only served metrics", test_queried_metrics_exist)
    h.check("rules file has the Prometheus rules structure", test_rules_valid)
    h.check("promtool accepts the rules and the dashboard's expressions", test_promtool)
    h.finish()
