#!/usr/bin/env python3
"""What nats-server moves per chunk (issue 16, "the wire").

A job of 300 chunks (identity, 2 mappers) while a plain NATS client counts
the credits on P.credit. A credit is absolute state (free slots, chunks
received), so a mapper sends one per loop iteration at most, holding the
latest state, instead of one per event: before, every chunk cost two
credits (one when mapped, one when its saver confirmed it), a third of the
messages nats-server moved per chunk. Asserted: fewer than 1.6 credits per
chunk (about 0.8 measured at full speed; 2 and more before), and every
record saved exactly once.
"""
import rawnats
from harness import Pipeline, check, finish, torn_down

CHUNKS = 300
LIMIT = 1.6


def credits_per_chunk():
    P = Pipeline("wire", records=CHUNKS * 100, mappers=2, transform="identity")
    with torn_down(P):
        P.wait_ready([P.saver] + P.mappers)
        spy = rawnats.RawNats(P.nats.port, name="credit-counter")
        try:
            sid = spy.sub(f"{P.prefix}.credit")
            assert spy.flush(), "no PONG from nats-server"
            before = spy.count(sid)
            f = P.start_fetcher(["--once", "--job", "wire", "--progress", "0"])
            rc = f.wait(120)
            assert rc == 0, (rc, f.log()[-1500:])
            assert spy.flush(), "no PONG from nats-server"
            credits = spy.count(sid) - before
        finally:
            spy.close()
        assert P.db_query("SELECT count(*), count(DISTINCT chunk || '.' || idx) FROM records") == \
            [(CHUNKS * 100, CHUNKS * 100)]
        per_chunk = credits / CHUNKS
        print(f"{credits} credits for {CHUNKS} chunks: {per_chunk:.2f} per chunk", flush=True)
        assert per_chunk < LIMIT, f"{per_chunk:.2f} credits per chunk (limit {LIMIT})"


check("fewer than 1.6 credits per chunk on the wire", credits_per_chunk)
finish()
