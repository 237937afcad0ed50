#!/usr/bin/env python3
"""A read-only kvtk participant in Python, written from docs/protocol.md alone.

It reads, from the stream leader, a lock's holders and waiters in queue order with their
tickets, an election's leader, term and candidates, and a group's members, and prints them
as one JSON document. It refuses (exit status 2, the reason on stderr) any recipe value of
a format version it does not know, and writes nothing, ever.

    PYTHONPATH="$(scripts/ensure-python-client.sh)" python3 clients/python/kvtk_view.py \\
        --url nats://127.0.0.1:4222 --locks-bucket locks --lock jobs.nightly \\
        --elections-bucket elections --election scheduler \\
        --members-bucket members --group api

Needs nats-py (pinned by scripts/ensure-python-client.sh).
"""

import argparse
import asyncio
import base64
import json
import sys

import nats

# docs/protocol.md, "Format versions": the one format this client speaks.
FORMAT = 1
API = "$JS.API"
TIMEOUT = 5.0


class Refused(Exception):
    """A value of a format version this client does not know."""


class Entry:
    """The last message of one key, as the stream leader returned it."""

    def __init__(self, key, seq, headers, data):
        self.key, self.revision, self.headers, self.data = key, seq, headers, data

    def is_value(self):
        # "The bucket and the wire": a tombstone or purge carries KV-Operation, an expiry
        # (or other) marker Nats-Marker-Reason; anything else is a live value.
        return "KV-Operation" not in self.headers and "Nats-Marker-Reason" not in self.headers

    def mark(self):
        """The lease mark (nonce, origin, done) of `Kv-Lease`, or None (no mark, or unparsable)."""
        raw = self.headers.get("Kv-Lease")
        if raw is None:
            return None
        done = raw.endswith(":done")
        if done:
            raw = raw[: -len(":done")]
        nonce, sep, origin = raw.partition(":")
        if len(nonce) != 32 or any(c not in "0123456789abcdef" for c in nonce):
            return None
        if not sep:
            return nonce, self.revision, done
        if not origin.isdigit() or int(origin) == 0:
            return None
        return nonce, int(origin), done

    def token(self):
        """The fencing token: min(origin, revision) from the mark, else the revision."""
        m = self.mark()
        return self.revision if m is None else min(m[1], self.revision)

    def bound_session(self):
        """The session id a live value is bound to ("Binding an entry"): a `Kv-Lease` mark,
        no `Nats-TTL`, not a session key. None for anything else."""
        m = self.mark()
        if m is None or not self.is_value() or "Nats-TTL" in self.headers:
            return None
        if self.key.startswith("_session."):
            return None
        return m[0]

    def check_header_format(self, what):
        # Values that are not JSON carry their version in the Kv-Format header.
        v = self.headers.get("Kv-Format")
        if v is not None and v.strip() != str(FORMAT):
            raise Refused(f"{what} {self.key} has format version {v}, this client speaks {FORMAT}")

    def json(self, what):
        """The JSON object of a recipe value after its version check; None if not an object."""
        self.check_header_format(what)
        try:
            obj = json.loads(self.data)
        except ValueError:
            return None
        if not isinstance(obj, dict):
            return None
        v = obj.get("v", FORMAT)
        if type(v) is not int or v != FORMAT:
            raise Refused(f"{what} {self.key} has format version {json.dumps(v)}, this client speaks {FORMAT}")
        return obj


def parse_headers(block):
    """A NATS header block: `NATS/1.0[ status]\\r\\n` then `Name: value\\r\\n` lines."""
    headers = {}
    for line in block.decode("utf-8", "replace").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip()] = value.strip()
    return headers


class Bucket:
    def __init__(self, nc, name):
        self.nc, self.name, self.stream = nc, name, f"KV_{name}"

    async def api(self, what, body):
        msg = await self.nc.request(f"{API}.{what}", json.dumps(body).encode(), timeout=TIMEOUT)
        return json.loads(msg.data)

    async def leader_read(self, key):
        """The key's last message from the stream leader; None when it has no message."""
        r = await self.api(f"STREAM.MSG.GET.{self.stream}", {"last_by_subj": f"$KV.{self.name}.{key}"})
        if "error" in r:
            if r["error"].get("err_code") == 10037:
                return None
            raise RuntimeError(f"leader read of {key}: {r['error']}")
        m = r["message"]
        headers = parse_headers(base64.b64decode(m["hdrs"])) if m.get("hdrs") else {}
        data = base64.b64decode(m["data"]) if m.get("data") else b""
        return Entry(key, m["seq"], headers, data)

    async def keys(self, filter_):
        """Every key matching `filter_` that has a message (value, tombstone or marker)."""
        prefix, keys, offset = f"$KV.{self.name}.", [], 0
        while True:
            body = {"subjects_filter": prefix + filter_, "offset": offset}
            r = await self.api(f"STREAM.INFO.{self.stream}", body)
            if "error" in r:
                raise RuntimeError(f"listing {filter_}: {r['error']}")
            subjects = r.get("state", {}).get("subjects") or {}
            keys += [s[len(prefix):] for s in subjects]
            offset += len(subjects)
            if not subjects or offset >= r.get("total", 0):
                return sorted(set(keys))

    async def session_alive(self, sid):
        """"Is the session alive?": a leader read of `_session.<sid>` judged by the table. A
        session key with no message is ended too (this client writes nothing, so it never
        confirms it: it only leaves the entry out, which a later writer removes)."""
        e = await self.leader_read(f"_session.{sid}")
        if e is None or not e.is_value():
            return False
        try:
            obj = json.loads(e.data)
        except ValueError:
            obj = None
        if not isinstance(obj, dict) or type(obj.get("v")) is not int:
            raise Refused(f"session {sid}: the session key's value is not a session")
        if obj["v"] != 1:
            raise Refused(f"session {sid} has format version {obj['v']}, this client speaks 1")
        m = e.mark()
        return m is not None and m[0] == sid

    async def live(self, filter_):
        """The live values of the keys matching `filter_`, read from the stream leader."""
        out = []
        for key in await self.keys(filter_):
            e = await self.leader_read(key)
            if e is not None and e.is_value():
                out.append(e)
        return out


def holds(kinds, permits):
    """How many entries at the queue's head hold ("Who holds")."""
    if permits is not None:
        return min(permits, len(kinds))
    n = 0
    for i, kind in enumerate(kinds):
        if kind == "x":
            return 1 if i == 0 else n
        n += 1  # a reader with no writer ahead
    return n


async def lock_view(b, name):
    queue = []
    for e in await b.live(f"{name}._q.*"):
        value = e.json("lock queue entry") or {}
        holder = value.get("holder") if isinstance(value.get("holder"), dict) else {}
        queue.append({
            "key": e.key,
            "ticket": e.token(),
            "holder": holder.get("id"),
            "kind": value.get("kind"),
            "multi": value.get("multi", []),
        })
    queue.sort(key=lambda q: q["ticket"])
    permits = None
    p = await b.leader_read(f"{name}._s.permits")
    if p is not None and p.is_value():
        p.check_header_format("semaphore permit count")
        permits = int(p.data.decode().strip())
    n = holds([q["kind"] for q in queue], permits)
    return {"permits": permits, "holders": queue[:n], "waiters": queue[n:]}


async def election_view(b, name):
    leader = None
    e = await b.leader_read(f"{name}.leader")
    if e is not None and e.is_value():
        rec = e.json("leader record") or {}
        leader = {"id": rec.get("id"), "value": rec.get("value", ""), "term": e.token()}
    cands = []
    for c in await b.live(f"{name}.cand.*"):
        rec = c.json("candidate registration") or {}
        cands.append({"id": rec.get("id"), "registered": c.token()})
    cands.sort(key=lambda c: c["registered"])
    return {"leader": leader, "candidates": cands}


async def group_view(b, group):
    members, sessions = [], {}
    for e in await b.live(f"{group}.*"):
        e.check_header_format("member")
        sid = e.bound_session()
        if sid is not None:
            # "A group": a bound member is present only while its session is alive (one
            # leader read per session).
            if sid not in sessions:
                sessions[sid] = await b.session_alive(sid)
            if not sessions[sid]:
                continue
        members.append({
            "id": e.key[len(group) + 1:],
            "joined_at": e.token(),
            "metadata": e.data.decode("utf-8", "replace"),
        })
    members.sort(key=lambda m: m["joined_at"])
    return members


async def main(args):
    nc = await nats.connect(args.url, connect_timeout=TIMEOUT, max_reconnect_attempts=1)
    try:
        out = {"locks": {}, "elections": {}, "groups": {}}
        for name in args.lock:
            out["locks"][name] = await lock_view(Bucket(nc, args.locks_bucket), name)
        for name in args.election:
            out["elections"][name] = await election_view(Bucket(nc, args.elections_bucket), name)
        for name in args.group:
            out["groups"][name] = await group_view(Bucket(nc, args.members_bucket), name)
        return out
    finally:
        await nc.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="nats://127.0.0.1:4222")
    p.add_argument("--locks-bucket", default="locks")
    p.add_argument("--elections-bucket", default="elections")
    p.add_argument("--members-bucket", default="members")
    p.add_argument("--lock", action="append", default=[])
    p.add_argument("--election", action="append", default=[])
    p.add_argument("--group", action="append", default=[])
    try:
        print(json.dumps(asyncio.run(main(p.parse_args())), indent=1, sort_keys=True))
    except Refused as e:
        print(f"kvtk_view: refused: {e}", file=sys.stderr)
        sys.exit(2)
