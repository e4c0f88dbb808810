"""More rough edges a new user hits (issue 15), and scripts/run's terminal.

- a mapper started with no NATS server does not log "mapper ready" and its
  /readyz answers 503 "not connected to NATS" (chunkmill_ready 0); once a
  server comes up on its URL it logs "mapper ready" and /readyz turns 200;
- the mapper's start line splits its slots as the README says: workers +
  --prefetch + --save-window, the number /status reports; the README's mapper
  table documents --save-window with the default mapper --help shows;
- scripts/run says what the fetcher reads: "reading file:PATH" for a file
  (no record count), an http(s) URL without its user info and query, the
  record count only for gen:; it prints the status URL;
- scripts/run's final summary counts dead chunks and dead letters and prints
  the sqlite3 queries that show them (run here: they return those rows);
  without a terminal it prints the fetcher's plain progress lines and no
  carriage returns;
- on a terminal (a real pty) it redraws one progress line in place several
  times, also for a job shorter than a second or two, and the summary starts
  on a line of its own.
scripts/run runs against this build tree (CM_BUILD_DIR = CM_BIN_DIR).
"""
import json
import os
import pty
import re
import select
import signal
import sqlite3
import subprocess
import time

from harness import (Nats, Proc, bin_path, check, finish, free_port, http_get, parse_prometheus,
                     tmpdir, wait_until, BIN_DIR)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RUN = os.path.join(ROOT, "scripts", "run")


def clean_env(extra=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKMILL_")}
    e["CM_BUILD_DIR"] = os.path.abspath(BIN_DIR)
    e.update(extra or {})
    return e


def mapper_not_ready_without_nats():
    work = tmpdir("cm-edges-")
    nats_port, http_port = free_port(), free_port()
    m = Proc("mapper-nonats", [bin_path("mapper"), "--nats-url", f"nats://127.0.0.1:{nats_port}",
                               "--http", f"127.0.0.1:{http_port}", "--id", "lonely"],
             log_dir=work)
    try:
        wait_until(lambda: http_get(http_port, "/readyz")[0] is not None, 10,
                   what="mapper's probe server")
        time.sleep(1.5)  # time enough to (wrongly) claim it
        st, body = http_get(http_port, "/readyz")
        assert st == 503 and "not connected to NATS" in body, f"/readyz: {st} {body!r}"
        samples, _ = parse_prometheus(http_get(http_port, "/metrics")[1])
        assert samples.get('chunkmill_ready{role="mapper"}') == 0, samples.get(
            'chunkmill_ready{role="mapper"}')
        assert "mapper ready" not in m.log(), f"claims ready without NATS:\n{m.log()}"
        assert "mapper started" in m.log(), m.log()
        nats = Nats(work, port=nats_port)
        try:
            wait_until(lambda: http_get(http_port, "/readyz")[0] == 200, 30,
                       what="/readyz 200 once NATS is up")
            wait_until(lambda: "mapper ready" in m.log(), 5, what='"mapper ready" logged')
            samples, _ = parse_prometheus(http_get(http_port, "/metrics")[1])
            assert samples.get('chunkmill_ready{role="mapper"}') == 1
        finally:
            m.stop()
            nats.stop()
    finally:
        m.stop()


def mapper_slots_as_documented():
    work = tmpdir("cm-edges-")
    nats = Nats(work)
    port = free_port()
    m = Proc("mapper-slots", [bin_path("mapper"), "--nats-url", nats.url, "--http",
                              f"127.0.0.1:{port}", "--concurrency", "2", "--prefetch", "3",
                              "--save-window", "5", "--id", "slots"], log_dir=work)
    try:
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, 20, what="mapper ready")
        st = json.loads(http_get(port, "/status")[1])
        start = [line for line in m.log().splitlines() if "mapper started" in line]
        assert start, m.log()
        assert "2 workers, 10 slots (2 workers + 3 --prefetch + 5 --save-window)" in start[0], start[0]
        assert st["slots"] == 10, st
    finally:
        m.stop()
        nats.stop()
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    row = re.search(r"^\| `--save-window` \| `(\d+)` \|(.*)$", readme, re.M)
    assert row, "README's mapper table has no --save-window row"
    out = subprocess.run([bin_path("mapper"), "--help"], capture_output=True, text=True,
                         timeout=10).stdout
    assert re.search(rf"--save-window\b.*\b{row.group(1)}\b", out.replace("\n", " ")), \
        f"README says --save-window defaults to {row.group(1)}; mapper --help:\n{out}"
    assert "workers + --prefetch + --save-window" in readme, "README still counts slots wrong"
    assert "`workers + --prefetch` slots" not in readme


def ndjson_with_bad_line(path, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "first_name": "Ada", "last_name": f"L{i}"}) + "\n")
            if i == n // 2:
                f.write("this line is not JSON\n")


def run_script(args, run_dir, tty=False, timeout=120):
    """scripts/run ARGS; returns (exit code, output). With tty, stdout and
    stderr are a pty's slave end."""
    env = clean_env({"CM_RUN_DIR": run_dir})
    if not tty:
        p = subprocess.Popen([RUN] + args, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
            raise
        return p.returncode, out.decode("utf-8", "replace")
    master, slave = pty.openpty()
    p = subprocess.Popen([RUN] + args, env=env, stdout=slave, stderr=slave,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every slave end closed
                    break
                if not data:
                    break
                chunks.append(data)
            elif p.poll() is not None:
                break
        else:
            raise AssertionError(f"scripts/run did not finish in {timeout}s")
        p.wait(10)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
        os.close(master)
    return p.returncode, b"".join(chunks).decode("utf-8", "replace")


def run_plain_summary():
    work = tmpdir("cm-edges-")
    src = os.path.join(work, "in.ndjson")
    ndjson_with_bad_line(src, 1000)
    run_dir = os.path.join(work, "run")
    # Chunk 2 fails every time (one lease allowed): one dead chunk; the bad
    # line: one dead letter. The fetcher exits 3 (dead chunks), so does run.
    rc, out = run_script(["--mappers", "1", "--source", f"file:{src}", "--transform", "fail:2",
                          "--max-deliver", "1"], run_dir)
    assert rc == 3, f"exit {rc}:\n{out}"
    assert f"reading file:{src}" in out, out
    assert "fetching" not in out and "100000" not in out, out
    assert re.search(r"status: http://127\.0\.0\.1:\d+/status", out), out
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/ ", out), out
    assert "\r" not in out, "carriage returns without a terminal"
    assert "dead:    1 dead chunks, 1 dead letters" in out, out
    queries = re.findall(r"^  (?:chunks|letters): sqlite3 (\S+) '([^']+)'$", out, re.M)
    assert len(queries) == 2, out
    for db, q in queries:
        con = sqlite3.connect(db)
        try:
            rows = con.execute(q).fetchall()
        finally:
            con.close()
        assert len(rows) == 1, f"{q} on {db}: {rows}"


def run_start_line_http_redacted():
    work = tmpdir("cm-edges-")
    port = free_port()  # nobody listens: the fetcher fails, the start line is what counts
    url = f"http://user:hunter2@127.0.0.1:{port}/users?token=s3cret"
    rc, out = run_script(["--mappers", "1", "--source", url, "--records", "777"],
                         os.path.join(work, "run"), timeout=90)
    mine = "\n".join(line for line in out.splitlines() if line.startswith("==> "))
    assert f"reading http://127.0.0.1:{port}/users?..." in mine, out
    assert "hunter2" not in out, out
    assert "s3cret" not in mine and "777" not in mine, mine
    # At least 1.5 s of work (30 chunks of 100 ms on two single-worker
    # mappers): the fetcher's plain progress lines (every 1 s) show.
    rc, out = run_script(["--mappers", "2", "--concurrency", "1", "--records", "3000",
                          "--transform", "sleep:100"], os.path.join(work, "run2"))
    assert rc == 0 and "fetching 3000 gen:users records" in out, f"exit {rc}:\n{out}"
    assert re.search(r"^progress: \d+/30 chunks", out, re.M), f"no plain progress lines:\n{out}"
    assert "\r" not in out, "carriage returns without a terminal"


def run_tty_redraw():
    work = tmpdir("cm-edges-")
    # About a second of work: 30 chunks of 30 ms on 2 single-worker mappers.
    rc, out = run_script(["--mappers", "2", "--concurrency", "1", "--records", "3000",
                          "--transform", "sleep:30"], os.path.join(work, "run"), tty=True)
    assert rc == 0, f"exit {rc}:\n{out}"
    frames = re.findall(r"\r\x1b\[K([^\r\n]*)", out)
    drawn = [f for f in frames if re.search(r"\d+/30 chunks", f)]
    assert len(drawn) >= 3, f"{len(drawn)} progress redraws:\n{out!r}"
    done = {int(re.search(r"(\d+)/30 chunks", f).group(1)) for f in drawn}
    assert len(done) >= 2, f"the line never changed: {sorted(done)}"
    assert not re.search(r"^progress: ", out, re.M), "plain progress lines on a terminal"
    assert re.search(r"\n[^\r\n]*job \"default\" complete: 3000 records", out), out
    assert "dead:    0 dead chunks, 0 dead letters" in out, out
    assert re.search(r"status: http://127\.0\.0\.1:\d+/status", out), out


def run_tty_short():
    work = tmpdir("cm-edges-")
    rc, out = run_script(["--mappers", "1", "--records", "300"], os.path.join(work, "run"),
                         tty=True)
    assert rc == 0, f"exit {rc}:\n{out}"
    frames = re.findall(r"\r\x1b\[K([^\r\n]*)", out)
    assert frames and "3/3 chunks (100.0%), 300 records" in frames[-1], f"{frames!r}\n{out!r}"
    assert re.search(r"\n[^\r\n]*job \"default\" complete: 300 records", out), out


check("mapper without NATS: not ready, no 'mapper ready' until connected",
      mapper_not_ready_without_nats)
check("mapper start line: slots = workers + --prefetch + --save-window, as in the README",
      mapper_slots_as_documented)
check("scripts/run without a terminal: file source named, dead counted and shown",
      run_plain_summary)
check("scripts/run start line: http URL redacted, record count only for gen:, plain progress",
      run_start_line_http_redacted)
check("scripts/run on a terminal: one progress line redrawn in place", run_tty_redraw)
check("scripts/run on a terminal, a job of a few milliseconds: the line ends at 100%",
      run_tty_short)
finish()
