#!/usr/bin/env python3
"""Chaos run: a job of --records while SIGKILLing random mappers, the saver
and the fetcher (each restarted) and restarting nats-server at least twice.
With --db postgres: --savers savers (3) on a throwaway PostgreSQL server
(pg.py), a random one killed each time, and PostgreSQL crash-restarted
(pg_ctl -m immediate) too.
With --nats-nodes N (>1) NATS is a cluster of N routed servers, every daemon
is given the whole list, and killing a random node (hung first, or SIGKILLed
at once; restarted after a while) is one more fault of every round; the
--nats-restarts still take the whole cluster down.
At the end it checks exactly-once against the source and prints a one-line
JSON verdict. Exit 0 only for 0 lost, 0 duplicated, 0 stuck.
"""
import argparse
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import time

from harness import Pipeline, bin_path, http_get, status

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--records", type=int, default=1000000)
ap.add_argument("--mappers", type=int, default=4)
ap.add_argument("--chunk-size", type=int, default=100)
ap.add_argument("--transform", default="fullname")
ap.add_argument("--min-gap", type=float, default=0.7, help="seconds between faults (min)")
ap.add_argument("--max-gap", type=float, default=2.5, help="seconds between faults (max)")
ap.add_argument("--nats-restarts", type=int, default=2)
ap.add_argument("--nats-nodes", type=int, default=1,
                help="NATS servers (>1: a routed cluster on loopback)")
ap.add_argument("--timeout", type=float, default=1800)
ap.add_argument("--seed", type=int, default=None)
ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
ap.add_argument("--savers", type=int, default=None, help="savers (postgres only; default 3)")
args = ap.parse_args()
seed = args.seed if args.seed is not None else int(time.time())
rng = random.Random(seed)

SRV = None
PipelineClass = Pipeline
if args.db == "postgres":
    import pg
    why = pg.skip_reason()
    if why:
        print(f"SKIP: {why}", flush=True)
        sys.exit(pg.SKIP)
    SRV = pg.PgServer()
    SRV.create_db("chaos")

    class PgPipeline(Pipeline):
        def start_saver(self, name="saver"):
            from harness import Proc, free_port
            port = free_port()
            p = Proc(f"{name}-{port}-{int(time.time() * 1000)}",
                     [bin_path("saver")] + self.common("saver", port) +
                     ["--db", SRV.dsn("chaos"), "--id", f"{name}-{port}"], log_dir=self.workdir)
            p.port = port
            return p

    PipelineClass = PgPipeline

P = PipelineClass("chaos", records=args.records, mappers=args.mappers, transform=args.transform,
             chunk_size=args.chunk_size, extra_mapper=["--save-timeout", "2s"],
             nats_nodes=args.nats_nodes,
             extra_fetcher=["--job", "chaos", "--ack-wait", "10s", "--progress", "0"])
total_chunks = (args.records + args.chunk_size - 1) // args.chunk_size
CLUSTER = args.nats_nodes > 1
faults = {"mapper_kill": 0, "saver_kill": 0, "fetcher_kill": 0, "nats_restart": 0}
savers = [P.saver]
if SRV is not None:
    savers += [P.start_saver(f"saver{i}") for i in range(1, args.savers or 3)]
    faults["postgres_restart"] = 0
if CLUSTER:
    faults["nats_node_kill"] = 0


def nats_restart(down_s):
    """The whole of NATS down for down_s, then back."""
    if CLUSTER:
        for i in range(args.nats_nodes):
            P.nats.kill9(i)
        time.sleep(down_s)
        for i in range(args.nats_nodes):
            P.nats.start(i)
    else:
        P.nats.proc.kill9()
        time.sleep(down_s)
        P.nats.start()
    faults["nats_restart"] += 1


def nats_node_kill():
    """One random node dies (half the time after hanging a moment, so what
    was sent to it is lost) and comes back after a while, as a pod would."""
    i = rng.randrange(args.nats_nodes)
    if rng.random() < 0.5:
        P.nats.freeze_and_kill(i, rng.uniform(0.1, 0.4))
    else:
        P.nats.kill9(i)
    time.sleep(rng.uniform(0.5, 2.0))
    P.nats.start(i)
    faults["nats_node_kill"] += 1
t0 = time.time()


def progress():
    s = status(P.fetcher) if P.fetcher and P.fetcher.alive() else None
    return s["job"] if s else None


P.wait_ready(savers + P.mappers, timeout=30)
P.start_fetcher()
restart_marks = [(i + 1) / (args.nats_restarts + 1) for i in range(args.nats_restarts)]
last_done = 0
complete = False
cycle = []
while time.time() - t0 < args.timeout:
    time.sleep(rng.uniform(args.min_gap, args.max_gap))
    job = progress()
    if job:
        last_done = job["done_chunks"]
        if job["complete"]:
            complete = True
            break
    frac = last_done / total_chunks
    if restart_marks and frac >= restart_marks[0]:
        restart_marks.pop(0)
        nats_restart(rng.uniform(0.5, 2.0))
        continue
    # Every kind of fault comes up in each round of four, in random order.
    if not cycle:
        cycle = (["mapper", "mapper", "saver", "fetcher"] + (["postgres"] if SRV else []) +
                 (["nats_node"] if CLUSTER else []))
        rng.shuffle(cycle)
    action = cycle.pop()
    if action == "mapper":
        victim = P.mappers.pop(rng.randrange(len(P.mappers)))
        victim.kill9()
        P.start_mapper()  # a replacement, as a Deployment would start
        faults["mapper_kill"] += 1
    elif action == "nats_node":
        nats_node_kill()
    elif action == "saver":
        i = rng.randrange(len(savers))
        savers[i].kill9()
        time.sleep(rng.uniform(0.1, 1.0))
        savers[i] = P.start_saver("saver")
        P.saver = savers[0]
        faults["saver_kill"] += 1
    elif action == "postgres":
        SRV.crash()
        time.sleep(rng.uniform(0.2, 1.5))
        SRV.start()
        faults["postgres_restart"] += 1
    else:
        P.fetcher.kill9()
        time.sleep(rng.uniform(0.1, 1.0))
        P.start_fetcher()
        faults["fetcher_kill"] += 1

# Let the remaining nats restarts happen even on a short job, then finish.
while restart_marks:
    restart_marks.pop(0)
    nats_restart(1.0)
if CLUSTER and faults["nats_node_kill"] == 0:
    nats_node_kill()
deadline = time.time() + 600
while not complete and time.time() < deadline:
    if not P.fetcher.alive():
        P.start_fetcher()
    job = progress()
    complete = bool(job and job["complete"])
    time.sleep(0.5)
seconds = time.time() - t0

def results(sql):
    """Rows of the results database, SQLite or PostgreSQL (integers as int)."""
    if SRV is not None:
        return [tuple(int(v) if v.lstrip("-").isdigit() else v for v in r)
                for r in SRV.rows(sql, "chaos")]
    con = sqlite3.connect(P.db, timeout=30)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


rows = results("SELECT count(*) FROM records")[0][0]
distinct = results("SELECT count(*) FROM (SELECT DISTINCT job, chunk, idx FROM records) AS d")[0][0]
per_chunk = dict(results("SELECT chunk, count(*) FROM records GROUP BY chunk"))
bad_chunks = []
for c in range(total_chunks):
    want = min(args.chunk_size, args.records - c * args.chunk_size)
    if per_chunk.get(c, 0) != want:
        bad_chunks.append(c)
lcon = sqlite3.connect(P.ledger, timeout=30)
stuck = lcon.execute("SELECT count(*) FROM chunks WHERE job='chaos' AND state != 2").fetchone()[0]
created = lcon.execute("SELECT next_index FROM jobs WHERE name='chaos'").fetchone()[0]
lcon.close()
stuck += total_chunks - created

# Content check on a few chunks: what was saved is what the transform gives
# for what the source generated.
content_ok = True
if args.transform == "fullname" or args.transform == "identity" or args.transform.startswith("sleep:"):
    for c in rng.sample(range(total_chunks), min(5, total_chunks)):
        src = json.loads(subprocess.run([bin_path("fetcher"), "--records", str(args.records),
                                         "--chunk-size", str(args.chunk_size), "--print-chunk",
                                         str(c)], capture_output=True, text=True, timeout=60,
                                        check=True).stdout)["data"]
        if SRV is not None:  # psql prints one body per line (no newline in compact JSON)
            got = [json.loads(b) for b in SRV.psql(
                f"SELECT body FROM records WHERE chunk={int(c)} ORDER BY idx", "chaos").splitlines()]
        else:
            got = [json.loads(b) for (b,) in results(
                f"SELECT body FROM records WHERE chunk={int(c)} ORDER BY idx")]
        if args.transform == "fullname":
            want = [{"id": r["uuid"], "name": f'{r["fn"]} {r["ln"]}'} for r in src]
        else:
            want = src
        content_ok &= got == want

verdict = {
    "records": args.records, "saved": rows, "lost": max(0, args.records - distinct),
    "duplicated": rows - distinct, "stuck": stuck, "wrong_chunks": len(bad_chunks),
    "content_ok": content_ok, "complete": complete, "faults": faults,
    "seconds": round(seconds, 1), "seed": seed,
}
verdict["ok"] = (complete and verdict["lost"] == 0 and verdict["duplicated"] == 0 and stuck == 0
                 and not bad_chunks and content_ok and faults["nats_restart"] >= 2
                 and (not CLUSTER or faults["nats_node_kill"] >= 1))
for s in savers[1:]:
    s.stop()
P.stop_all()
if SRV is not None:
    SRV.stop()
shutil.rmtree(P.workdir, ignore_errors=True)
print(json.dumps(verdict), flush=True)
sys.exit(0 if verdict["ok"] else 1)
