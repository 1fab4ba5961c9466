#!/usr/bin/env python3
"""A/B: the same sluice-loadgen workload against sluice variants, alternated.

Each VARIANT is NAME=PATH-TO-SLUICE, optionally with ":tls" (the server gets
a fresh self-signed certificate from openssl and the load generator does
STARTTLS on every connection). Rounds alternate the order of the variants,
so drift on a shared machine hits them alike; the table gives every round
and the median, and each median's ratio to the first variant.

  benches/ab.py base=/tmp/old/sluice new=target/release/sluice
  benches/ab.py plain=target/release/sluice tls=target/release/sluice:tls

Every load is bounded (--duration); the run takes about
rounds x variants x (seconds + 3) seconds.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import free_port, load, stop_process, wait_port  # noqa: E402


def self_signed(workdir):
    cert, key = os.path.join(workdir, "ab.crt"), os.path.join(workdir, "ab.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:FALSE", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def run_variant(binary, tls, args, workdir, material):
    port = free_port()
    spool = os.path.join(workdir, "ab-spool")
    shutil.rmtree(spool, ignore_errors=True)
    cmd = [binary, "serve", "--listen", f"127.0.0.1:{port}", "--spool", spool,
           "--max-message-size", "64M"]
    if not args.log:
        cmd.insert(2, "-q")
    if args.server_cores:
        cmd += ["--cores", args.server_cores]
    cmd += args.server_args.split()
    extra = args.loadgen_args.split()
    if tls:
        cmd += ["--tls-cert", material[0], "--tls-key", material[1]]
        extra += ["--tls", "--tls-ca", material[0]]
    log = open(os.path.join(workdir, "ab.log"), "wb") if args.log else None
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=log)
    try:
        wait_port(port)
        r = load(port, args.size, args.sessions, args.seconds, args.loadgen_cores, extra)
    finally:
        stop_process(proc)
        shutil.rmtree(spool, ignore_errors=True)
        if log:
            log.close()
    if r["errors"]:
        raise SystemExit(f"ab: {r['errors']} errors in a run; not a fair comparison")
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", metavar="NAME=SLUICE[:tls]")
    ap.add_argument("--size", default="1k")
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--server-cores", default="")
    ap.add_argument("--loadgen-cores", default="")
    ap.add_argument("--loadgen-args", default="", help="more sluice-loadgen flags, one string")
    ap.add_argument("--log", action="store_true",
                    help="servers log at their default level (not -q), stderr into a file")
    ap.add_argument("--server-args", default="",
                    help="more `sluice serve` flags for every variant, one string (--durability none)")
    args = ap.parse_args()
    variants = []
    for v in args.variants:
        name, _, spec = v.partition("=")
        binary, _, flag = spec.partition(":")
        if not name or not os.access(binary, os.X_OK) or flag not in ("", "tls"):
            raise SystemExit(f"ab: {v!r} is not NAME=PATH-TO-SLUICE[:tls]")
        variants.append((name, binary, flag == "tls"))
    results = {name: [] for name, _, _ in variants}
    with tempfile.TemporaryDirectory() as workdir:
        material = self_signed(workdir) if any(t for _, _, t in variants) else None
        for rnd in range(args.rounds):
            order = variants if rnd % 2 == 0 else list(reversed(variants))
            for name, binary, tls in order:
                r = run_variant(binary, tls, args, workdir, material)
                results[name].append(r)
                print(f"round {rnd + 1}: {name} {r['messages_per_s']:,.0f} msg/s, "
                      f"p99 {r['latency_eod']['p99_ms']} ms", file=sys.stderr)
    med = statistics.median
    first = med(r["messages_per_s"] for r in results[variants[0][0]])
    logging = "default log level, stderr to a file" if args.log else "-q"
    print(f"{args.size} x {args.sessions} sessions {args.loadgen_args} {args.server_args} ({logging}), "
          f"{args.seconds} s per run, "
          f"{args.rounds} rounds\n")
    print("| variant | msgs/s per round | median | ratio | MB/s | p50 ms | p99 ms (end of data → reply) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, _, _ in variants:
        runs = results[name]
        rate = med(r["messages_per_s"] for r in runs)
        rounds = ", ".join(f"{r['messages_per_s']:,.0f}" for r in runs)
        mb = med(r["mb_per_s"] for r in runs)
        p50 = med(r["latency_eod"]["p50_ms"] for r in runs)
        p99 = med(r["latency_eod"]["p99_ms"] for r in runs)
        print(f"| {name} | {rounds} | {rate:,.0f} | {rate / first:.2f}x | {mb:,.0f} | {p50} | {p99} |")


if __name__ == "__main__":
    main()
