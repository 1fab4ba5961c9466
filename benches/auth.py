#!/usr/bin/env python3
"""Submission costs: what TLS and AUTH add, and whether a burst of wrong
passwords stalls the other sessions of a core.

Part 1 (rates): the same sluice-loadgen workload (1 KiB, 50 sessions,
--messages-per-connection M) on port 25 in clear, on --submission with
STARTTLS + AUTH PLAIN, and on --submissions with implicit TLS + AUTH PLAIN;
the three alternate over --rounds rounds; medians and ratios to port 25.

Part 2 (a burst of bad passwords): the server on one core; an open-loop
load of good submissions (STARTTLS + AUTH, --rate msg/s) for --seconds,
alone, then again while --attackers threads each send wrong passwords
over STARTTLS as fast as they are answered (each bounded by the same
time and --max-attempts); by default with the error limits off, so
that every wrong password costs a hash at once. The good load's p50/p99 (end of data to 250,
from each message's intended start) and the 535s the attackers got.

Users: one SHA-512 crypt hash from `openssl passwd -6` (5,000 rounds, a
few ms of CPU per check). Everything on loopback; every loop bounded.

  benches/auth.py                 # both parts
  benches/auth.py --part burst --attackers 64
"""

import argparse
import json
import os
import shutil
import smtplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab import self_signed  # noqa: E402
from peers import LOADGEN, free_port, stop_process, wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLUICE = os.path.join(ROOT, "target", "release", "sluice")


def loadgen(port, args, seconds):
    cmd = [LOADGEN, "--target", f"127.0.0.1:{port}", "--json", "--quiet",
           "--max-error-rate", "1"] + args
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=seconds + 60)
    return json.loads(out.stdout)


class Server:
    """sluice with a port-25 listener, --submission and --submissions."""

    def __init__(self, workdir, cores, material, users, extra=()):
        self.smtp, self.sub, self.subs = free_port(), free_port(), free_port()
        self.spool = os.path.join(workdir, "auth-spool")
        shutil.rmtree(self.spool, ignore_errors=True)
        cmd = [SLUICE, "serve", "-q", "--spool", self.spool, "--cores", cores,
               "--listen", f"127.0.0.1:{self.smtp}",
               "--submission", f"127.0.0.1:{self.sub}",
               "--submissions", f"127.0.0.1:{self.subs}",
               "--tls-cert", material[0], "--tls-key", material[1], "--auth-users", users,
               *extra]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        try:
            wait_port(self.smtp)
            wait_port(self.sub)
            # 465 greets only after the TLS handshake: the others being up
            # means every listener is bound.
        except BaseException:
            self.stop()
            raise

    def stop(self):
        stop_process(self.proc)
        shutil.rmtree(self.spool, ignore_errors=True)


def rates(args, workdir, material, users):
    ca = material[0]
    common = ["--size", "1k", "--connections", "50", "--duration", f"{args.seconds}s",
              "--warmup", "1s", "--messages-per-connection", str(args.per_connection)]
    kinds = [
        ("port 25, clear", lambda s: (s.smtp, [])),
        ("587 STARTTLS + AUTH", lambda s: (s.sub, ["--tls", "--tls-ca", ca, "--auth", "alice:secret"])),
        ("465 implicit TLS + AUTH",
         lambda s: (s.subs, ["--implicit-tls", "--tls-ca", ca, "--auth", "alice:secret"])),
    ]
    results = {name: [] for name, _ in kinds}
    for rnd in range(args.rounds):
        order = kinds if rnd % 2 == 0 else list(reversed(kinds))
        for name, pick in order:
            s = Server(workdir, args.server_cores, material, users)
            try:
                port, extra = pick(s)
                r = loadgen(port, common + extra, args.seconds)
            finally:
                s.stop()
            if r["errors"]:
                raise SystemExit(f"auth: {r['errors']} errors in {name}: {r['first_error']}")
            results[name].append(r["messages_per_s"])
            print(f"round {rnd + 1}: {name} {r['messages_per_s']:,.0f} msg/s", file=sys.stderr)
    base = statistics.median(results[kinds[0][0]])
    print(f"\n1 KiB x 50 sessions, {args.per_connection} messages per connection, "
          f"server --cores {args.server_cores}, {args.seconds} s per run, {args.rounds} rounds\n")
    print("| listener | msgs/s per round | median | ratio |")
    print("|---|---|---:|---:|")
    for name, _ in kinds:
        med = statistics.median(results[name])
        per = ", ".join(f"{r:,.0f}" for r in results[name])
        print(f"| {name} | {per} | {med:,.0f} | {med / base:.2f}x |")


def attacker(port, ca, stop_at, max_attempts, counts, lock):
    """Wrong passwords over STARTTLS until time or the count runs out."""
    ctx = ssl.create_default_context(cafile=ca)
    done = 0
    while time.monotonic() < stop_at and done < max_attempts:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
                c.starttls(context=ctx)
                c.ehlo("attacker.test")
                while time.monotonic() < stop_at and done < max_attempts:
                    code, _ = c.docmd("AUTH", "PLAIN AGFsaWNlAHdyb25n")  # alice / wrong
                    done += 1
                    with lock:
                        counts[code] = counts.get(code, 0) + 1
                    if code != 535:
                        break
        except (smtplib.SMTPException, OSError):
            with lock:
                counts["closed"] = counts.get("closed", 0) + 1


def burst(args, workdir, material, users):
    ca = material[0]
    good = ["--size", "1k", "--connections", "20", "--rate", str(args.rate),
            "--duration", f"{args.seconds}s", "--warmup", "1s", "--tls", "--tls-ca", ca,
            "--auth", "alice:secret", "--cores", "1"]
    rows = []
    # Without the error limits every wrong password is a hash on the
    # core's blocking thread at once: the worst case for the other
    # sessions. With them (the default) the tarpit slows each attacker.
    limits = [] if args.tarpit == "on" else ["--soft-error-limit", "0", "--hard-error-limit", "0"]
    for attackers in (0, args.attackers):
        s = Server(workdir, "1", material, users, limits)
        counts, lock, threads = {}, threading.Lock(), []
        try:
            stop_at = time.monotonic() + args.seconds + 1
            for _ in range(attackers):
                t = threading.Thread(target=attacker,
                                     args=(s.sub, ca, stop_at, args.max_attempts, counts, lock))
                t.start()
                threads.append(t)
            r = loadgen(s.sub, good, args.seconds)
            for t in threads:
                t.join()
        finally:
            s.stop()
        lat = r["latency_eod"]
        rows.append((attackers, r["messages_per_s"], lat["p50_ms"], lat["p99_ms"], r["errors"],
                     counts.get(535, 0), {k: v for k, v in counts.items() if k != 535}))
    print(f"\nserver --cores 1, error limits {'on (default)' if args.tarpit == 'on' else 'off'}; "
          f"good load: {args.rate} msg/s open loop over 20 STARTTLS+AUTH sessions for "
          f"{args.seconds} s\n")
    print("| attackers | good msgs/s | good p50 ms | good p99 ms | good errors | 535s answered | other |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for a, rate, p50, p99, err, bad, other in rows:
        print(f"| {a} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {err} | {bad:,} | {other or ''} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["rates", "burst", "both"], default="both")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-connection", type=int, default=100,
                    help="messages per connection in part 1 (1: a handshake and an AUTH per message)")
    ap.add_argument("--server-cores", default="2")
    ap.add_argument("--rate", type=int, default=1000, help="good messages per second in part 2")
    ap.add_argument("--attackers", type=int, default=32)
    ap.add_argument("--max-attempts", type=int, default=20000, help="per attacker thread")
    ap.add_argument("--tarpit", choices=["on", "off"], default="off",
                    help="the server's default error limits (on) or none (off, the worst case)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        material = self_signed(workdir)
        users = os.path.join(workdir, "users")
        hashed = subprocess.run(["openssl", "passwd", "-6", "secret"], check=True,
                                capture_output=True, text=True).stdout.strip()
        with open(users, "w") as f:
            f.write(f"alice:{hashed}\n")
        if args.part in ("rates", "both"):
            rates(args, workdir, material, users)
        if args.part in ("burst", "both"):
            burst(args, workdir, material, users)


if __name__ == "__main__":
    main()
