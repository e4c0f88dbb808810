#!/usr/bin/env python3
"""What user code inherits from the mapper, and what it leaves behind
(issue 10 part 2, issue 11 "Secrets never leak").

- An exec: child lists its open descriptors (fstat of 3..1023, which opens
  nothing itself) and its environment into a file: only 0, 1, 2 are open and
  no NATS credential is there, with the mapper started against a
  nats-server that needs a password (NATS_URL=nats://alice:PASSWORD@...,
  CHUNKMILL_NATS_USER/PASSWORD), and one that needs a token
  (CHUNKMILL_NATS_TOKEN).
- A plugin (examples/plugin/envprobe.c) sees no credential in the mapper's
  environment either.
- Orphans: `exec:sh -c 'sleep 30 | cat'` with --exec-timeout 1s on 3 chunks.
  Killing the shell's process group orphans sleep and cat. This test process
  makes itself a child subreaper (as PID 1 of a container would inherit
  them) and does not reap strangers: after the job no zombie is left with
  this process or the mapper as parent, and the mapper counts the orphans
  it reaped.
"""
import ctypes
import json
import os
import tempfile
import time

from harness import (BIN_DIR, Nats, Pipeline, Proc, bin_path, check, finish,
                     free_port, http_get, parse_prometheus, torn_down, wait_until)

ENVPROBE = os.path.join(BIN_DIR, "examples", "plugin", "envprobe.so")

CHILD = r'''
import json, os, sys
fds = []
for fd in range(0, 1024):
    try:
        os.fstat(fd)
        fds.append(fd)
    except OSError:
        pass
with open(os.environ["CM_PROBE_OUT"], "w") as fh:
    json.dump({"fds": fds, "env": dict(os.environ)}, fh)
for line in sys.stdin:
    print(line.strip(), flush=True)
'''


def run_mapper_job(workdir, nats, env, transform, extra=()):
    """A saver, one mapper (env: its whole auth), a fetcher: 100 records."""
    prefix = f"iso{os.getpid()}"
    procs = []
    try:
        sport, mport, fport = free_port(), free_port(), free_port()
        auth_env = dict(env)
        common = ["--prefix", prefix, "--heartbeat", "200ms"]
        saver = Proc(f"saver-{sport}", [bin_path("saver"), "--http", f"127.0.0.1:{sport}",
                                        "--db", os.path.join(workdir, "r.db")] + common,
                     env=auth_env, log_dir=workdir)
        procs.append(saver)
        mapper = Proc(f"mapper-{mport}", [bin_path("mapper"), "--http", f"127.0.0.1:{mport}",
                                          "--transform", transform] + list(extra) + common,
                      env=auth_env, log_dir=workdir)
        procs.append(mapper)
        for p, port in ((saver, sport), (mapper, mport)):
            wait_until(lambda: http_get(port, "/readyz")[0] == 200, 20,
                       what=f"{p.name} ready")
        fetcher = Proc(f"fetcher-{fport}", [bin_path("fetcher"), "--http", f"127.0.0.1:{fport}",
                                            "--records", "100", "--once", "--ledger",
                                            os.path.join(workdir, f"l{fport}.db")] + common,
                       env=auth_env, log_dir=workdir)
        procs.append(fetcher)
        assert fetcher.wait(60) == 0, fetcher.log()[-800:]
        return mapper.log()
    finally:
        for p in procs:
            p.stop()


def check_probe(path, secrets):
    with open(path) as fh:
        text = fh.read()
    for s in secrets:
        assert s not in text, f"secret {s!r} visible to user code: {text[:600]}"
    return text


def exec_child_and_plugin_see_no_secrets():
    workdir = tempfile.mkdtemp(prefix="cm-iso-")
    try:
        cases = [
            ("password", ["--user", "alice", "--pass", "pw-Secret-123"],
             lambda url: {"NATS_URL": url.replace("nats://", "nats://alice:pw-Secret-123@"),
                          "CHUNKMILL_NATS_USER": "alice",
                          "CHUNKMILL_NATS_PASSWORD": "pw-Secret-123"},
             ["pw-Secret-123"]),
            ("token", ["--auth", "tok-Secret-456"],
             lambda url: {"NATS_URL": url, "CHUNKMILL_NATS_TOKEN": "tok-Secret-456"},
             ["tok-Secret-456"]),
        ]
        for name, server_args, envf, secrets in cases:
            nats = Nats(workdir, extra=server_args)
            try:
                env = envf(nats.url)
                env.pop("CHUNKMILL_NATS_URL", None)
                out = os.path.join(workdir, f"child-{name}.json")
                run_mapper_job(workdir, nats, dict(env, CHUNKMILL_NATS_URL=""),
                               "exec:" + json.dumps(["python3", "-u", "-c", CHILD]),
                               ["--exec-env", f"CM_PROBE_OUT={out}", "--concurrency", "1"])
                seen = json.loads(check_probe(out, secrets))
                assert seen["fds"] == [0, 1, 2], f"{name}: child has descriptors {seen['fds']}"
                assert not any(k.startswith("CHUNKMILL_NATS_") for k in seen["env"]), seen["env"]
                # the plugin: the mapper's own environment
                pout = os.path.join(workdir, f"plugin-{name}.txt")
                run_mapper_job(workdir, nats, dict(env, CHUNKMILL_NATS_URL=""),
                               f"plugin:{ENVPROBE}", ["--transform-arg", pout])
                text = check_probe(pout, secrets)
                assert text.endswith("ok\n") and "env PATH=" in text, text[-300:]
            finally:
                nats.stop()
    finally:
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)


def zombies_of(pids):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                st = fh.read()
        except OSError:
            continue
        rest = st[st.rindex(")") + 2:].split()
        if rest[0] == "Z" and int(rest[1]) in pids:
            out.append(int(d))
    return out


def orphans_are_reaped():
    PR_SET_CHILD_SUBREAPER = 36
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    P = Pipeline("reap", records=300, mappers=1, transform="exec:sh -c 'sleep 30 | cat'",
                 extra_mapper=["--exec-timeout", "1s", "--concurrency", "3"])
    try:
        with torn_down(P):
            P.wait_ready([P.saver] + P.mappers)
            f = P.start_fetcher(["--once", "--job", "reap", "--max-deliver", "1", "--allow-dead"])
            assert f.wait(60) == 0, f.log()[-800:]
            m = P.mappers[0]
            time.sleep(1.5)  # the reaper looks every 250 ms
            z = zombies_of({os.getpid(), m.pid})
            assert z == [], f"{len(z)} zombies left: {z}"
            s, _ = parse_prometheus(http_get(m.port, "/metrics")[1])
            assert s.get("chunkmill_exec_orphans_reaped_total", 0) >= 3, s.get(
                "chunkmill_exec_orphans_reaped_total")
    finally:
        for pid in zombies_of({os.getpid()}):  # strangers we inherited
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


check("exec child and plugin: only stdio, no NATS credentials", exec_child_and_plugin_see_no_secrets)
check("exec: orphaned grandchildren of killed children are reaped", orphans_are_reaped)
finish()
