#!/usr/bin/env python3
"""Does `sluice drain` keep up with ingest? The same load with and without it.

For each message size, rounds alternate between sluice alone and sluice
with a drain into a local JetStream (nats-server, file storage). Each run
is a closed-loop sluice-loadgen run; with the drain, the script then waits
until the drain has handed on every message and reports the drain's own
rate (messages / time from the start of the load to the last PubAck) and
how long it needed after the load stopped. Then, per size, it drains a
backlog alone (the spool filled first, the drain started after the load)
to show the drain's own rate when it does not share the CPUs with ingest.

  benches/drain.py [--sizes 1k,64k] [--seconds 10] [--rounds 3] [--cluster 3] [--sluice PATH]

Needs nats-server (apt-get install nats-server) and release builds
(cargo build --release --workspace). Every load and wait is bounded.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import LOADGEN, ROOT, SLUICE, free_port, load, stop_process, wait_port  # noqa: E402
from cpu import cpu_seconds  # noqa: E402

NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"


def start_nats(workdir, nodes, max_payload=None):
    ports = [free_port() for _ in range(nodes)]
    routes = [free_port() for _ in range(nodes)]
    procs = []
    for i in range(nodes):
        args = [NATS, "-js", "-a", "127.0.0.1", "-p", str(ports[i]), "-n", f"n{i}",
                "-sd", os.path.join(workdir, f"nats{i}")]
        if max_payload:
            # Messages up to this size go into the stream itself; larger
            # ones through the object store (nats-server's default: 1 MB).
            conf = os.path.join(workdir, f"nats{i}.conf")
            with open(conf, "w") as f:
                f.write(f"max_payload: {max_payload}\n")
            args += ["-c", conf]
        if nodes > 1:
            args += ["--cluster_name", "bench", "--cluster", f"nats://127.0.0.1:{routes[i]}",
                     "--routes", ",".join(f"nats://127.0.0.1:{p}" for p in routes)]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(2 if nodes > 1 else 0.5)
    return procs, ",".join(f"nats://127.0.0.1:{p}" for p in ports)


def drained(metrics_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = lag = 0
    for line in text.splitlines():
        if line.startswith("sluice_drain_messages_total{"):
            total += float(line.split()[-1])
        if line.startswith("sluice_drain_lag_messages{"):
            lag += float(line.split()[-1])
    return total, lag


def wait_drained(mport, want, limit=120):
    deadline = time.time() + limit
    while True:
        try:
            total, lag = drained(mport)
        except OSError:  # not listening yet
            total, lag = 0, 1
        if total >= want and lag == 0:
            return total
        if time.time() > deadline:
            raise SystemExit(f"drain: {total} of {want} after {limit} s")
        time.sleep(0.05)


def start_drain(spool, urls, stream, replicas):
    mport = free_port()
    proc = subprocess.Popen([SLUICE, "drain", "-q", "--spool", spool, "--nats", urls,
                             "--stream", stream, "--subject", f"bench.{stream}",
                             "--replicas", str(replicas), "--metrics", f"127.0.0.1:{mport}"],
                            stdin=subprocess.DEVNULL)
    return proc, mport


def run(args, size, with_drain, workdir, urls, stream, nats, backlog=False):
    port = free_port()
    spool = os.path.join(workdir, "spool")
    shutil.rmtree(spool, ignore_errors=True)
    serve = subprocess.Popen([SLUICE, "serve", "-q", "--listen", f"127.0.0.1:{port}", "--spool", spool,
                              "--max-message-size", "64M"], stdin=subprocess.DEVNULL)
    drain = None
    try:
        wait_port(port)
        if with_drain and not backlog:
            drain, mport = start_drain(spool, urls, stream, args.cluster)
            time.sleep(1.5)
        started = time.time()
        r = load(port, size, args.sessions, args.seconds, "")
        load_end = time.time()
        result = {"ingest": r["messages_per_s"], "acked": r["acknowledged"]}
        if backlog:
            started = time.time()
            nats_before = sum(cpu_seconds(p.pid) for p in nats)
            drain, mport = start_drain(spool, urls, stream, args.cluster)
        if with_drain:
            total = wait_drained(mport, r["acknowledged"])
            done = time.time()
            if backlog:
                # CPU per message handed on: the drain's own (all its
                # threads) and every NATS node's.
                result["drain_us"] = cpu_seconds(drain.pid) * 1e6 / total
                result["nats_us"] = (sum(cpu_seconds(p.pid) for p in nats) - nats_before) * 1e6 / total
            result["drain"] = total / (done - started)
            result["catch_up"] = done - load_end
        return result
    finally:
        if drain:
            stop_process(drain)
        stop_process(serve)
        shutil.rmtree(spool, ignore_errors=True)


def main():
    global SLUICE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1k,64k")
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cluster", type=int, default=1, help="JetStream nodes (and stream replicas)")
    ap.add_argument("--sluice", default=SLUICE, help="the sluice binary (serve and drain) to measure")
    ap.add_argument("--max-payload", type=int, help="nats-server max_payload in octets (default its 1 MB)")
    args = ap.parse_args()
    SLUICE = args.sluice
    for exe in (SLUICE, LOADGEN, NATS):
        if not os.access(exe, os.X_OK):
            raise SystemExit(f"drain bench: {exe} is missing (cargo build --release --workspace; "
                             "apt-get install nats-server)")
    workdir = tempfile.mkdtemp(prefix="sluice-drain-bench-", dir=os.path.join(ROOT, "target"))
    procs, urls = start_nats(workdir, args.cluster, args.max_payload)
    rows = []
    try:
        for size in args.sizes.split(","):
            alone, drained_runs = [], []
            for rnd in range(args.rounds):
                order = [False, True] if rnd % 2 == 0 else [True, False]
                for with_drain in order:
                    r = run(args, size, with_drain, workdir, urls, f"B{rnd}{size.upper()}", procs)
                    (drained_runs if with_drain else alone).append(r)
                    print(f"drain bench: {size} round {rnd + 1} drain={with_drain}: {r}", file=sys.stderr)
            backlogs = []
            for rnd in range(args.rounds):
                r = run(args, size, True, workdir, urls, f"L{rnd}{size.upper()}", procs, backlog=True)
                backlogs.append(r)
                print(f"drain bench: {size} backlog round {rnd + 1}: {r}", file=sys.stderr)
            rows.append((size, alone, drained_runs, backlogs))
    finally:
        for p in procs:
            stop_process(p)
        shutil.rmtree(workdir, ignore_errors=True)
    med = statistics.median
    payload = f", max_payload {args.max_payload:,}" if args.max_payload else ""
    print(f"{args.sessions} sessions, {args.seconds} s closed loop, {args.rounds} rounds, "
          f"JetStream {args.cluster} node(s), R{args.cluster}{payload}\n")
    print("| size | ingest alone msgs/s | ingest with drain msgs/s | ratio | drain msgs/s | drain ÷ ingest | catch-up after load s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for size, alone, dr, _ in rows:
        a = med([r["ingest"] for r in alone])
        w = med([r["ingest"] for r in dr])
        d = med([r["drain"] for r in dr])
        c = med([r["catch_up"] for r in dr])
        print(f"| {size} | {a:,.0f} | {w:,.0f} | {w / a:.2f}x | {d:,.0f} | {d / w:.2f}x | {c:.2f} |")
    print("\nDraining a backlog alone (ingest stopped first):\n")
    print("| size | messages | drain msgs/s | ÷ ingest alone | drain CPU µs/msg | NATS CPU µs/msg |")
    print("|---|---:|---:|---:|---:|---:|")
    for size, alone, _, bl in rows:
        a = med([r["ingest"] for r in alone])
        d = med([r["drain"] for r in bl])
        n = med([r["acked"] for r in bl])
        du = med([r["drain_us"] for r in bl])
        nu = med([r["nats_us"] for r in bl])
        print(f"| {size} | {n:,.0f} | {d:,.0f} | {d / a:.2f}x | {du:.0f} | {nu:.0f} |")


if __name__ == "__main__":
    main()
