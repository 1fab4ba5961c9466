#!/usr/bin/env python3
"""Soak: one good client's mail through a storm of hostile ones.

Starts sluice on a loopback port (nobody trusted, --greet-pause on), then for
--seconds (default 60) runs --hostile clients (default 2,000, from distinct
loopback addresses, 20 per address) that each repeat one of these:

  garbage     random bytes, with and without line ends
  drip        a transaction one octet per second
  flood       pipelined commands (errors, and NOOPs whose replies it never reads)
  half-data   a transaction, 200 KB of body, then silence
  huge-bdat   BDAT 99999999999 LAST, then junk forever
  early       a whole transaction before the greeting

while a good client (its own process, from 127.0.0.2) sends --messages
(default 1,000) 1 KiB messages paced over the run, timing each end of data
to 250. Afterwards every one of its messages must be in the spool byte-exact
(`sluice spool export`), nothing may be stored that was not acknowledged
("queued as") to someone, and the server log must have no panic. Prints the good client's latencies (median, p99, max), the
server's RSS (start, peak, end) and CPU, and what the hostile clients got.

  benches/soak.py --sluice target/release/sluice

Bounded: the storm stops by itself after --seconds, every socket has a
timeout, and only loopback addresses are used.
"""

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import random
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import free_port, stop_process, wait_port  # noqa: E402

GOOD_ADDRESS = "127.0.0.2"
KINDS = ["garbage", "drip", "flood", "half-data", "huge-bdat", "early"]
TRANSACTION = b"EHLO hostile.test\r\nMAIL FROM:<h@x.test>\r\nRCPT TO:<r@y.test>\r\n"


def good_body(n):
    head = f"Subject: good {n}\r\n\r\n".encode()
    line = b"%06d good client line of the soak test, byte-exact please\r\n" % n
    return head + line * ((1024 - len(head)) // len(line))


def read_reply(sock, buf):
    """One whole reply; returns (text, rest of buf)."""
    text = b""
    while True:
        while b"\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed after {text!r}")
            buf += chunk
        line, _, buf = buf.partition(b"\n")
        text += line + b"\n"
        if line[3:4] != b"-":
            return text.decode(errors="replace"), buf


def good_client(port, messages, seconds, results):
    """Sends `messages` paced over `seconds`; puts {ids, latencies, errors}."""
    interval = seconds / messages
    ids, latencies, errors = {}, [], []
    sock, buf = None, b""
    start = time.monotonic()
    for n in range(messages):
        delay = start + n * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for attempt in range(3):
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=30,
                                                    source_address=(GOOD_ADDRESS, 0))
                    # Without it the "." waits for the body's ACK (Nagle).
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    buf = b""
                    greeting, buf = read_reply(sock, buf)
                    assert greeting.startswith("220"), greeting
                    sock.sendall(b"EHLO good.test\r\n")
                    ehlo, buf = read_reply(sock, buf)
                    assert ehlo.startswith("250"), ehlo
                sock.sendall(b"MAIL FROM:<good@x.test>\r\nRCPT TO:<n%d@y.test>\r\nDATA\r\n" % n)
                for want in ("250", "250", "354"):
                    r, buf = read_reply(sock, buf)
                    assert r.startswith(want), r
                sock.sendall(good_body(n))
                t = time.perf_counter()
                sock.sendall(b".\r\n")
                r, buf = read_reply(sock, buf)
                latencies.append(time.perf_counter() - t)
                if not r.startswith("250 2.0.0 Ok: queued as "):
                    raise AssertionError(r)
                ids[r.split()[-1]] = n
                break
            except (OSError, AssertionError, ConnectionError) as e:
                errors.append(f"message {n} attempt {attempt + 1}: {e}")
                if sock is not None:
                    sock.close()
                sock = None
    if sock is not None:
        sock.sendall(b"QUIT\r\n")
        sock.close()
    results.put({"ids": ids, "latencies": latencies, "errors": errors})


class Storm:
    """The hostile clients, on one asyncio loop."""

    def __init__(self, port, count, deadline):
        self.port, self.count, self.deadline = port, count, deadline
        self.connections = {k: 0 for k in KINDS}
        self.replies = {k: {} for k in KINDS}
        self.refused_connects = 0
        # Messages a hostile client got "queued as" for: an early talker
        # whose transaction reached the server only after the greeting
        # (this loop was too busy to send it sooner) is a normal client.
        self.queued = {k: 0 for k in KINDS}

    def address(self, i):
        return f"127.1.{i // 20 // 250}.{i // 20 % 250 + 1}"

    async def run(self):
        await asyncio.gather(*(self.client(i) for i in range(self.count)))

    async def client(self, i):
        kind = KINDS[i % len(KINDS)]
        rnd = random.Random(i)
        while time.monotonic() < self.deadline:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port,
                                            local_addr=(self.address(i), 0)), 5)
            except (OSError, asyncio.TimeoutError):
                self.refused_connects += 1
                await asyncio.sleep(0.5)
                continue
            self.connections[kind] += 1
            watcher = asyncio.ensure_future(self.count_replies(kind, reader, kind != "flood"))
            try:
                await asyncio.wait_for(self.behave(kind, writer, rnd),
                                       max(0.1, self.deadline - time.monotonic()))
            except (OSError, asyncio.TimeoutError):
                pass
            finally:
                watcher.cancel()
                writer.transport.abort()
            await asyncio.sleep(0.2)

    async def count_replies(self, kind, reader, reads):
        """Tallies the reply codes a client gets (a flood never reads)."""
        if not reads:
            return
        tally = self.replies[kind]
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                if line.startswith(b"250 2.0.0 Ok: queued as "):
                    self.queued[kind] += 1
                if len(line) > 3 and line[3:4] == b" ":
                    code = line[:3].decode(errors="replace")
                    tally[code] = tally.get(code, 0) + 1
        except (OSError, ValueError):
            return

    async def behave(self, kind, w, rnd):
        if kind == "early":
            w.write(TRANSACTION + b"DATA\r\nSubject: early\r\n\r\nspam\r\n.\r\nQUIT\r\n")
            await w.drain()
            await asyncio.sleep(30)
        elif kind == "garbage":
            await asyncio.sleep(0.6)
            while True:
                junk = rnd.randbytes(rnd.randint(1, 2000))
                if rnd.random() < 0.5:
                    junk += b"\r\n"
                w.write(junk)
                await w.drain()
                await asyncio.sleep(0.05)
        elif kind == "drip":
            await asyncio.sleep(0.6)
            for b in TRANSACTION + b"DATA\r\nSubject: drip\r\n\r\n" + b"x" * 1000:
                w.write(bytes([b]))
                await w.drain()
                await asyncio.sleep(1)
        elif kind == "flood":
            await asyncio.sleep(0.6)
            batch = b"NOOP\r\n" * 2000 if rnd.random() < 0.5 else b"FROB\r\nNOOP\r\nRSET\r\n" * 700
            while True:
                w.write(batch)
                await w.drain()
        elif kind == "half-data":
            await asyncio.sleep(0.6)
            w.write(TRANSACTION + b"DATA\r\n")
            await w.drain()
            await asyncio.sleep(0.2)
            w.write(b"Subject: never ends\r\n\r\n" + (b"y" * 998 + b"\r\n") * 200)
            await w.drain()
            await asyncio.sleep(120)
        elif kind == "huge-bdat":
            await asyncio.sleep(0.6)
            w.write(TRANSACTION + b"BDAT 99999999999 LAST\r\n")
            junk = b"z" * 65536
            while True:
                w.write(junk)
                await w.drain()
                await asyncio.sleep(0.1)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sample_rss(pid, deadline, samples):
    while time.monotonic() < deadline:
        samples.append(rss_kib(pid))
        await asyncio.sleep(0.5)


def sync_seconds(metrics_port):
    """The spool sync histogram of all cores: {le: count}."""
    page = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    buckets = {}
    for line in page.splitlines():
        m = re.match(r'sluice_spool_sync_seconds_bucket\{.*le="([^"]+)".*\} (\S+)', line)
        if m:
            buckets[m.group(1)] = buckets.get(m.group(1), 0) + float(m.group(2))
    return buckets


def bucket_at(buckets, share):
    """The smallest histogram bound holding `share` of the observations."""
    total = buckets.get("+Inf", 0)
    for le, n in sorted(buckets.items(), key=lambda kv: float(kv[0])):
        if total and n >= share * total:
            return le if le == "+Inf" else f"{float(le):g}"
    return "?"


def exported(binary, spool):
    out = subprocess.run([binary, "spool", "export", "--format", "jsonl", "--spool", spool],
                         check=True, capture_output=True).stdout
    stored = {}
    for line in out.splitlines():
        v = json.loads(line)
        stored[v["id"]] = base64.b64decode(v["data_b64"])
    return stored


def without_trace(data):
    """The message after the Received header sluice adds (and its folds)."""
    lines = data.split(b"\r\n")
    i = 1
    while i < len(lines) and lines[i].startswith(b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sluice", default="target/release/sluice")
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--hostile", type=int, default=2000)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--cores", default="2")
    ap.add_argument("--server-args", default="", help="more `sluice serve` flags, one string")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.hostile + 200:
        raise SystemExit(f"soak: RLIMIT_NOFILE hard limit {hard} is too low for {args.hostile} clients")
    with tempfile.TemporaryDirectory() as workdir:
        port, metrics_port = free_port(), free_port()
        spool = os.path.join(workdir, "spool")
        log_path = os.path.join(workdir, "server.log")
        cmd = [args.sluice, "serve", "--listen", f"127.0.0.1:{port}", "--spool", spool,
               "--cores", args.cores, "--trusted-network", "127.255.255.254/32",
               "--greet-pause", "0.5", "--metrics", f"127.0.0.1:{metrics_port}"] + args.server_args.split()
        with open(log_path, "w") as log:
            server = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=log)
        try:
            wait_port(port)
            time.sleep(0.6)
            rss_start = rss_kib(server.pid)
            cpu_start = cpu_seconds(server.pid)
            deadline = time.monotonic() + args.seconds
            results = multiprocessing.Queue()
            good = multiprocessing.Process(target=good_client, daemon=True,
                                           args=(port, args.messages, args.seconds - 5, results))
            storm = Storm(port, args.hostile, deadline)
            samples = []
            good.start()
            # The hostile clients would be other machines: this process
            # yields the CPU to the server and the good client.
            os.nice(10)

            async def everything():
                await asyncio.gather(storm.run(), sample_rss(server.pid, deadline, samples))

            asyncio.run(everything())
            outcome = results.get(timeout=120)
            good.join(10)
            cpu = cpu_seconds(server.pid) - cpu_start
            syncs = sync_seconds(metrics_port)
            time.sleep(2)
            rss_end = rss_kib(server.pid)
        finally:
            stop_process(server)
        stored = exported(args.sluice, spool)
        with open(log_path, errors="replace") as f:
            log_text = f.read()
    ids = outcome["ids"]
    exact = sum(1 for qid, n in ids.items() if qid in stored and without_trace(stored[qid]) == good_body(n))
    lat_ms = [x * 1000 for x in outcome["latencies"]]
    print(f"soak: {args.seconds} s, {args.hostile} hostile clients, --cores {args.cores}, {args.sluice}\n")
    hostile_queued = sum(storm.queued.values())
    print(f"good client: {len(ids)}/{args.messages} acknowledged, {exact} stored byte-exact, "
          f"{len(outcome['errors'])} errors")
    print(f"other messages in the spool: {len(stored) - exact}; acknowledged to hostile clients: "
          f"{hostile_queued} ({storm.queued})")
    if lat_ms:
        print(f"end of data -> 250: median {statistics.median(lat_ms):.2f} ms, "
              f"p99 {percentile(lat_ms, 99):.2f} ms, max {max(lat_ms):.2f} ms")
    print(f"spool syncs: {syncs.get('+Inf', 0):.0f}, p50 <= {bucket_at(syncs, 0.5)} s, "
          f"p99 <= {bucket_at(syncs, 0.99)} s, max <= {bucket_at(syncs, 1.0)} s")
    print(f"server RSS: start {rss_start / 1024:.0f} MiB, peak {max(samples + [rss_start]) / 1024:.0f} MiB, "
          f"2 s after the storm {rss_end / 1024:.0f} MiB; CPU {cpu:.1f} s over the run")
    print("\n| hostile kind | connections | replies by code |\n|---|---:|---|")
    for kind in KINDS:
        codes = ", ".join(f"{c}: {n}" for c, n in sorted(storm.replies[kind].items())) or "(never reads)"
        print(f"| {kind} | {storm.connections[kind]} | {codes} |")
    print(f"\nconnects that failed or timed out: {storm.refused_connects}")
    panics = log_text.count("panicked")
    print(f"panics in the server log: {panics}")
    for e in outcome["errors"][:10]:
        print(f"  good client error: {e}")
    ok = (len(ids) == args.messages and exact == args.messages
          and len(stored) - exact == hostile_queued and panics == 0)
    print("\nverdict:", "PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
