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


def run():
    work = tempfile.mkdtemp(prefix="cm-natsclose-")
    nats = Nats(work)
    try:
        exe = os.path.join(BIN_DIR, "tests", "integration", "natsconn_close")
        for i in range(3):
            r = subprocess.run([exe, nats.url], capture_output=True, text=True, timeout=30)
            print(f"  run {i + 1}: {r.stdout.strip()}")
            assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-2000:])
            assert "Sanitizer" not in r.stderr, r.stderr[-2000:]
    finally:
        nats.stop()
        shutil.rmtree(work, ignore_errors=True)


check("cm_nats_destroy with a delivery thread blocked on the handoff: prompt, no use after free",
      run)
finish()
