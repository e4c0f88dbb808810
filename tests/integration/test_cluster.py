#!/usr/bin/env python3
"""chunkmill on a NATS cluster: three real nats-servers routed to each other
on loopback, every daemon given the whole list (--nats-url a,b,c).

Cases (one per ctest entry, `--case NAME`; no argument runs them all):
  connect    the list form connects at once; /status and /metrics name the
             server; passwords and tokens in the list are shown nowhere;
             /readyz stays 200 while another node dies and is 503 only while
             no node is reachable
  failover   SIGKILL the fetcher's node mid-job and restart it, then SIGKILL
             a mapper's node: every record saved exactly once, the job
             complete, no mapper declared gone; prints the time from each
             node's death to dispatch resuming
  rolling    restart the three nodes one by one during a job (a StatefulSet
             rolling restart): exact
  node-gone  one node killed for good mid-job: the job completes on the
             other two, exact
"""
import argparse
import json
import os
import shutil
import sys
import time

from harness import (Pipeline, Proc, bin_path, check, dump_logs_on_failure, finish, free_port,
                     http_get, log_lines, parse_prometheus, status, wait_until)

ap = argparse.ArgumentParser()
ap.add_argument("--case", action="append", default=[])
ap.add_argument("--records", type=int, default=60000,
                help="job size, a multiple of 100 (the issue's full size: 300000)")
args = ap.parse_args()
CASES = args.case or ["connect", "failover", "rolling", "node-gone"]

# CI size: 60,000 records, 600 chunks of 100, 60 ms per chunk on 3-4
# mappers x 2 workers: the job lasts ~6 s undisturbed, long enough for the
# faults, short enough for CI (also under ASan).
RECORDS = args.records
CHUNKS = RECORDS // 100


def metrics(proc):
    st, body = http_get(proc.port, "/metrics", timeout=2)
    return parse_prometheus(body)[0] if st == 200 else {}


def job(P):
    s = status(P.fetcher) if P.fetcher and P.fetcher.alive() else None
    return s["job"] if s else None


def done_chunks(P):
    j = job(P)
    return j["done_chunks"] if j else 0


def node_of(P, proc):
    s = status(proc)
    return P.nats.node_of(s["nats_server"]) if s and s.get("nats_server") else None


def dispatched(P):
    return metrics(P.fetcher).get("chunkmill_fetcher_chunks_dispatched_total", -1)


def time_to_dispatch(P, t_kill, timeout=30):
    """Seconds from t_kill (a node's death) until the fetcher dispatches
    chunks again (its dispatched counter moves twice after the fault: a
    dispatch that was already under way does not count). Watches 3 s more
    and prints when the leases lost with the node were re-dispatched, if any
    were."""
    first = None
    lost0 = metrics(P.fetcher).get("chunkmill_fetcher_failover_redispatches_total", 0)
    lost_at = []
    deadline = time.monotonic() + timeout
    resumed = None
    while time.monotonic() < deadline:
        m = metrics(P.fetcher)
        d = m.get("chunkmill_fetcher_chunks_dispatched_total", -1)
        if resumed is None and d >= 0:
            if first is None:
                first = d
            elif d > first:
                resumed = time.monotonic() - t_kill
        lost = m.get("chunkmill_fetcher_failover_redispatches_total", lost0)
        if lost > lost0 + sum(n for n, _ in lost_at):
            lost_at.append((lost - lost0 - sum(n for n, _ in lost_at),
                            time.monotonic() - t_kill))
        if resumed is not None and time.monotonic() - t_kill > resumed + 3:
            break
        time.sleep(0.02)
    if resumed is None:
        raise AssertionError(f"dispatch did not resume within {timeout}s of the node's death")
    for n, at in lost_at:
        print(f"    {n:.0f} leases lost with the node re-dispatched {at:.2f} s after its "
              f"death")
    return resumed


def assert_exact(P):
    assert P.db_query("SELECT count(*) FROM records") == [(RECORDS,)], \
        P.db_query("SELECT count(*) FROM records")
    assert P.db_query("SELECT count(*) FROM (SELECT DISTINCT job, chunk, idx FROM records)") == \
        [(RECORDS,)]
    assert P.db_query("SELECT count(*) FROM chunks") == [(CHUNKS,)]


def wait_complete(P, timeout=120):
    wait_until(lambda: (job(P) or {}).get("complete"), timeout, interval=0.2,
               what="job complete")


def no_mapper_gone(P):
    gone = [e["msg"] for e in log_lines(P.fetcher) if "missed 3 heartbeats" in e.get("msg", "")]
    assert not gone, gone
    assert metrics(P.fetcher).get("chunkmill_fetcher_mapper_departures_total") == 0


# A node hangs this long before it dies (see NatsCluster.freeze_and_kill).
FREEZE_S = 0.3


def new_pipeline(name, mappers=3, transform="sleep:60", extra_fetcher=()):
    # Heartbeats every 500 ms: a mapper is gone after 1.5 s of silence, more
    # than a node's hang plus a failover, as with the default 1 s.
    return Pipeline(name, records=RECORDS, mappers=mappers, transform=transform, nats_nodes=3,
                    heartbeat="500ms", extra_mapper=["--concurrency", "2"],
                    extra_fetcher=["--job", "c", "--max-inflight", "24"] + list(extra_fetcher))


def stop_cleanly(P):
    """SIGTERM every daemon: each drains and exits 0 (under ASan, also no
    leak reports)."""
    codes = {p.name: p.stop(timeout=40) for p in
             ([P.fetcher] if P.fetcher else []) + P.mappers + [P.saver]}
    assert all(c == 0 for c in codes.values()), codes


def finish_case(P, ok_before):
    check("every daemon stops cleanly on SIGTERM (exit 0)", lambda: stop_cleanly(P))
    if __import__("harness")._results["failed"] > ok_before:
        dump_logs_on_failure(P)
        for i, node in enumerate(P.nats.nodes):
            print(f"---- nats node {i} (port {node.port}) log tail ----")
            print("\n".join(node.proc.log().splitlines()[-10:]))
    P.stop_all()
    shutil.rmtree(P.workdir, ignore_errors=True)


def failed():
    return __import__("harness")._results["failed"]


# ---- connect ----

def case_connect():
    P = Pipeline("cl-connect", records=1000, mappers=0, nats_nodes=3)
    before = failed()

    def list_connects_at_once():
        t0 = time.monotonic()
        P.wait_ready([P.saver], timeout=10)
        print(f"  saver ready {time.monotonic() - t0:.2f} s after start with a list of 3 servers")
        s = status(P.saver)
        assert P.nats.node_of(s["nats_server"]) is not None, s
        assert s["nats_reconnects"] == 0, s
        m = metrics(P.saver)
        info = {k: v for k, v in m.items() if k.startswith("chunkmill_nats_server_info{")}
        assert info == {f'chunkmill_nats_server_info{{server="{s["nats_server"]}"}}': 1.0}, info
        # The startup line names the whole list.
        assert any(P.nats.url in e.get("msg", "") for e in log_lines(P.saver)), P.saver.log()

    def readyz_follows_the_cluster():
        own = node_of(P, P.saver)
        other = (own + 1) % 3
        P.nats.kill9(other)
        for _ in range(10):  # another node's death is not ours
            assert http_get(P.saver.port, "/readyz")[0] == 200
            time.sleep(0.05)
        P.nats.kill9(own)
        t = time.monotonic()
        wait_until(lambda: (status(P.saver) or {}).get("nats_reconnects") == 1, 10,
                   what="the saver to reconnect")
        wait_until(lambda: http_get(P.saver.port, "/readyz")[0] == 200, 10,
                   what="/readyz 200 again, on the last node")
        print(f"  saver failed over to the last node in {time.monotonic() - t:.2f} s")
        s = status(P.saver)
        assert node_of(P, P.saver) == 3 - own - other, s
        assert metrics(P.saver)["chunkmill_nats_reconnects_total"] == 1
        P.nats.kill9(3 - own - other)
        wait_until(lambda: http_get(P.saver.port, "/readyz")[0] == 503, 10,
                   what="/readyz 503 with no node left")
        assert status(P.saver)["nats_server"] is None
        P.nats.start(own)
        wait_until(lambda: http_get(P.saver.port, "/readyz")[0] == 200, 15,
                   what="/readyz 200 once a node is back")
        assert node_of(P, P.saver) == own
        info = {k: v for k, v in metrics(P.saver).items()
                if k.startswith("chunkmill_nats_server_info{")}
        assert sorted(info.values()) == [0.0, 1.0], info  # two servers seen, one current

    def passwords_never_shown():
        # The nodes have no authorization: the credentials in the URL are
        # accepted and ignored, and must appear nowhere.
        n0, n1 = P.nats.nodes[0], P.nats.nodes[1]
        urls = f"nats://alice:Pw0rd-1@127.0.0.1:{n0.port},nats://T0ken-2@127.0.0.1:{n1.port}"
        port = free_port()
        m = Proc(f"mapper-secret-{port}", [bin_path("mapper"), "--nats-url", urls, "--prefix",
                                           P.prefix, "--http", f"127.0.0.1:{port}"],
                 log_dir=P.workdir)
        m.port = port
        try:
            wait_until(lambda: http_get(port, "/readyz")[0] == 200, 10, what="mapper ready")
            shown = m.log() + http_get(port, "/status")[1] + http_get(port, "/metrics")[1]
            assert "alice:***@127.0.0.1" in m.log(), m.log()
            assert "Pw0rd-1" not in shown and "T0ken-2" not in shown, shown
            server = status(m)["nats_server"]
            assert server in (f"nats://alice:***@127.0.0.1:{n0.port}",
                              f"nats://***@127.0.0.1:{n1.port}"), server
        finally:
            m.stop()

    check("a list of three servers connects at once", list_connects_at_once)
    check("passwords and tokens in the list are never shown", passwords_never_shown)
    check("/readyz is 503 only while no node is reachable", readyz_follows_the_cluster)
    finish_case(P, before)


# ---- failover ----

def case_failover():
    P = new_pipeline("cl-failover", mappers=4)
    before = failed()
    P.wait_ready([P.saver] + P.mappers, timeout=30)
    P.start_fetcher()
    P.wait_ready([P.fetcher], timeout=30)
    where = {p.name: node_of(P, p) for p in [P.fetcher, P.saver] + P.mappers}
    print(f"  placement (node per daemon): {where}")

    def kill_fetchers_node():
        wait_until(lambda: done_chunks(P) >= CHUNKS // 5, 60, what="a fifth of the job")
        victim = node_of(P, P.fetcher)
        P.nats.freeze_and_kill(victim, FREEZE_S)
        dt = time_to_dispatch(P, time.monotonic())
        print(f"  fetcher's node {victim} hung {FREEZE_S} s and died: dispatch resumed "
              f"{dt:.2f} s after its death")
        assert node_of(P, P.fetcher) not in (None, victim)
        P.nats.start(victim)
        P.nats.wait_routes()

    def kill_a_mappers_node():
        wait_until(lambda: done_chunks(P) >= CHUNKS // 2, 60, what="half of the job")
        mine = node_of(P, P.fetcher)
        on = {}
        for mp in P.mappers:
            on.setdefault(node_of(P, mp), []).append(mp.name)
        # A node with mappers but not the fetcher, if there is one.
        choices = [n for n in on if n is not None and n != mine] or [n for n in on if n is not None]
        victim = choices[0]
        P.nats.freeze_and_kill(victim, FREEZE_S)
        dt = time_to_dispatch(P, time.monotonic())
        print(f"  node {victim} of mappers {on[victim]} hung {FREEZE_S} s and died: dispatch "
              f"resumed {dt:.2f} s after its death")
        wait_until(lambda: all(node_of(P, mp) not in (None, victim) for mp in P.mappers), 15,
                   what="the mappers to fail over")

    def exact_and_quiet():
        wait_complete(P)
        assert_exact(P)
        no_mapper_gone(P)
        j = job(P)
        m = metrics(P.fetcher)
        print(f"  redeliveries {j['redeliveries']}, re-dispatched after a failover "
              f"{m.get('chunkmill_fetcher_failover_redispatches_total')}, expired leases "
              f"{m.get('chunkmill_fetcher_lease_expired_total')}")
        # Lost leases were re-dispatched at once, not after --ack-wait (30 s),
        # and lost saves sent again at once, not after --save-timeout (10 s).
        assert m.get("chunkmill_fetcher_lease_expired_total") == 0
        waited = {mp.name: metrics(mp).get("chunkmill_mapper_save_retries_total")
                  for mp in P.mappers}
        assert all(v == 0 for v in waited.values()), waited

    check("SIGKILL the fetcher's node mid-job, restart it", kill_fetchers_node)
    check("SIGKILL a mapper's node", kill_a_mappers_node)
    check("every record saved once, job complete, no mapper declared gone", exact_and_quiet)
    finish_case(P, before)


# ---- rolling restart ----

def case_rolling():
    P = new_pipeline("cl-rolling")
    before = failed()
    P.wait_ready([P.saver] + P.mappers, timeout=30)
    P.start_fetcher()

    def rolling_restart():
        wait_until(lambda: done_chunks(P) >= CHUNKS // 6, 60, what="a sixth of the job")
        for i in (2, 1, 0):  # a StatefulSet restarts the highest ordinal first
            t = time.monotonic()
            P.nats.nodes[i].stop()  # SIGTERM: nats-server closes its clients
            P.nats.start(i)
            P.nats.wait_routes()
            print(f"  node {i} restarted in {time.monotonic() - t:.2f} s "
                  f"(done {done_chunks(P)}/{CHUNKS})")
            time.sleep(0.5)

    def exact():
        wait_complete(P)
        assert_exact(P)
        no_mapper_gone(P)

    check("rolling restart of the three nodes during a job", rolling_restart)
    check("every record saved exactly once", exact)
    finish_case(P, before)


# ---- one node gone for good ----

def case_node_gone():
    P = new_pipeline("cl-gone")
    before = failed()
    P.wait_ready([P.saver] + P.mappers, timeout=30)
    P.start_fetcher()

    def kill_for_good():
        wait_until(lambda: done_chunks(P) >= CHUNKS // 4, 60, what="a quarter of the job")
        victim = node_of(P, P.saver)
        P.nats.freeze_and_kill(victim, FREEZE_S)
        dt = time_to_dispatch(P, time.monotonic())
        print(f"  node {victim} (the saver's) hung {FREEZE_S} s and died for good: dispatch "
              f"resumed {dt:.2f} s after its death")

    def completes_on_two():
        wait_complete(P)
        assert_exact(P)
        no_mapper_gone(P)
        for p in [P.fetcher, P.saver] + P.mappers:
            assert http_get(p.port, "/readyz")[0] == 200, p.name

    check("one node killed, never restarted", kill_for_good)
    check("the job completes on the other two, exactly once", completes_on_two)
    finish_case(P, before)


for c in CASES:
    {"connect": case_connect, "failover": case_failover, "rolling": case_rolling,
     "node-gone": case_node_gone}[c]()
finish()
