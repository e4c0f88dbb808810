#!/usr/bin/env python3
"""NATS connection teardown (issue 10 part 6): cm_nats_destroy while a
nats.c delivery thread is blocked on a full handoff queue returns promptly
and frees nothing that thread still uses (the C driver runs under ASan in
the sanitizer build). A real nats-server; repeated a few times."""
import os
import shutil
import subprocess
import tempfile

from harness import BIN_DIR, Nats, check, finish


def kept_on_purpose(err):
    """The only leak report accepted: the deliberate keep after nats.c's
    threads did not stop in time, with no other sanitizer error."""
    return ("keeping their state" in err and "ERROR: LeakSanitizer" in err
            and "ERROR: AddressSanitizer" not in err and "runtime error" not in err)


def run():
    work = tempfile.mkdtemp(prefix="cm-natsclose-")
    nats = Nats(work)
    try:
        exe = os.path.join(BIN_DIR, "tests", "integration", "natsconn_close")
        for i in range(3):
            r = subprocess.run([exe, nats.url], capture_output=True, text=True, timeout=30)
            print(f"  run {i + 1}: {r.stdout.strip()}")
            if kept_on_purpose(r.stderr):
                # Under heavy load nats.c's threads may outlive the 2 s
                # wait: cm_nats_destroy then keeps their state allocated on
                # purpose (natsconn.h) and LeakSanitizer reports it at exit.
                # Still no use after free, and it must have said so.
                print(f"  run {i + 1}: nats.c threads outlived the wait; state kept (leak "
                      "report tolerated)")
                continue
            assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-2000:])
            assert "Sanitizer" not in r.stderr, r.stderr[-2000:]
    finally:
        nats.stop()
        shutil.rmtree(work, ignore_errors=True)


check("cm_nats_destroy with a delivery thread blocked on the handoff: prompt, no use after free",
      run)
finish()
