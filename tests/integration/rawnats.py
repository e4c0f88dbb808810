"""A hostile NATS client for tests: the NATS text protocol over a plain
socket (CONNECT/PUB/SUB/MSG/PING), and hand-made protobuf encodings of the
chunkmill control messages (proto/chunkmill.proto), so a test can publish
anything a client with some credentials could.
"""
import json
import os
import socket
import threading


def _varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num, value):
    if isinstance(value, bool):
        return _varint(num << 3) + _varint(1 if value else 0)
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    if isinstance(value, str):
        value = value.encode()
    return _varint((num << 3) | 2) + _varint(len(value)) + value


def _msg(fields):
    return b"".join(_field(n, v) for n, v in fields if v not in (None, "", 0, False))


def credit(mapper_id, subject, free, received=0, instance="", slots=0, version="x",
           draining=False):
    return _msg([(1, mapper_id), (2, subject), (3, version), (4, free), (5, received),
                 (6, draining), (7, instance), (8, slots)])


def ack(job, index, attempt, records, dead=0, duplicate=False, saver_id="evil", mac=""):
    return _msg([(1, job), (2, index), (3, attempt), (4, records), (5, dead), (6, duplicate),
                 (7, saver_id), (8, mac)])


def nak(job, index, attempt, mapper_id, reason="forged", lease=""):
    return _msg([(1, job), (2, index), (3, attempt), (4, mapper_id), (5, reason), (8, lease)])


def heartbeat(id_, role="mapper", period_ms=200, instance="", version="x"):
    return _msg([(1, id_), (2, role), (3, version), (7, period_ms), (10, instance)])


class RawNats:
    """One connection; a reader thread counts MSGs per subscription and keeps
    the last few payloads. Raises on -ERR at connect."""

    def __init__(self, port, user=None, password=None, token=None, name="attacker"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.rf = self.sock.makefile("rb")
        self.lock = threading.Lock()
        self.ponged = threading.Condition(self.lock)
        self.pongs = 0
        self.counts = {}
        self.payloads = {}
        self.errors = []
        self.sids = 0
        line = self.rf.readline()
        assert line.startswith(b"INFO "), line
        opts = {"verbose": False, "pedantic": False, "name": name, "lang": "python",
                "version": "0", "protocol": 1}
        if user is not None:
            opts["user"], opts["pass"] = user, password
        if token is not None:
            opts["auth_token"] = token
        self._send(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")
        line = self.rf.readline()
        if not line.startswith(b"PONG"):
            raise RuntimeError(f"nats refused the attacker: {line!r}")
        self.closed = False
        self.sock.settimeout(None)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _send(self, data):
        with self.lock:
            self.sock.sendall(data)

    def _read(self):
        try:
            while True:
                line = self.rf.readline()
                if not line:
                    return
                if line.startswith(b"MSG "):
                    parts = line.split()
                    sid = parts[2].decode()
                    n = int(parts[-1])
                    data = self.rf.read(n + 2)[:n]
                    with self.lock:
                        self.counts[sid] = self.counts.get(sid, 0) + 1
                        self.payloads.setdefault(sid, []).append(data)
                        del self.payloads[sid][:-50]
                elif line.startswith(b"PING"):
                    self._send(b"PONG\r\n")
                elif line.startswith(b"PONG"):
                    with self.lock:
                        self.pongs += 1
                        self.ponged.notify_all()
                elif line.startswith(b"-ERR"):
                    with self.lock:
                        self.errors.append(line.decode(errors="replace").strip())
        except (OSError, ValueError):
            return

    def sub(self, subject, queue=None):
        self.sids += 1
        sid = str(self.sids)
        q = f" {queue}" if queue else ""
        self._send(f"SUB {subject}{q} {sid}\r\n".encode())
        return sid

    def pub(self, subject, data, reply=None):
        if isinstance(data, str):
            data = data.encode()
        r = f" {reply}" if reply else ""
        self._send(f"PUB {subject}{r} {len(data)}\r\n".encode() + data + b"\r\n")

    def flush(self, timeout=5):
        """Round trip: True once the server has answered a PING sent after
        everything published so far (so it has processed all of it), False
        if no PONG came within timeout seconds."""
        with self.lock:
            want = self.pongs + 1
        self._send(b"PING\r\n")
        with self.lock:
            return self.ponged.wait_for(lambda: self.pongs >= want, timeout)

    def count(self, sid):
        with self.lock:
            return self.counts.get(sid, 0)

    def last(self, sid):
        with self.lock:
            return list(self.payloads.get(sid, []))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def random_hex(n=32):
    return os.urandom(n // 2).hex()


def decode(data):
    """The fields of a protobuf message as {number: value}: varints as int,
    length-delimited fields as bytes (the last one wins, as for a scalar)."""
    out, i = {}, 0

    def varint():
        nonlocal i
        v, shift = 0, 0
        while True:
            b = data[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v
    while i < len(data):
        key = varint()
        num, wt = key >> 3, key & 7
        if wt == 0:
            out[num] = varint()
        elif wt == 2:
            n = varint()
            out[num] = bytes(data[i:i + n])
            i += n
        else:
            raise ValueError(f"wire type {wt} of field {num} not handled")
    return out


def _mac(key, fields):
    """cm/lease.h: HMAC-SHA256 over length-prefixed fields, first 128 bits
    as hex."""
    import hashlib
    import hmac
    buf = b"".join(len(f).to_bytes(4, "big") + f for f in
                   (x.encode() if isinstance(x, str) else x for x in fields))
    return hmac.new(key, buf, hashlib.sha256).hexdigest()[:32]


def lease_token(key, job, index, attempt, mapper, redo=0):
    f = ["lease", job, str(index), str(attempt), mapper]
    if redo:
        f += ["r", str(redo)]
    return _mac(key, f)


def ack_mac(key, job, index, attempt, records, dead, duplicate, version="", redo=0):
    f = ["ack", job, str(index), str(attempt), str(records), str(dead),
         "1" if duplicate else "0"]
    if version:
        f += ["v", version]
    if redo:
        f += ["r", str(redo)]
    return _mac(key, f)
