#!/usr/bin/env python3
"""Server CPU per message: sluice (fsync and none, 1 and 2 cores) against
Postfix's smtp-sink, the same load generator, in one run.

For each cell (server × size × DATA/BDAT) the server is started, the load
generator sends --messages messages over --sessions sessions, and the
server's CPU time is read from /proc/PID/stat before and after (utime +
stime of the whole thread group: every executor thread, the spool writer
and io_uring's iou-wrk workers, which are threads of the process; kernel
time spent in softirq on the server's behalf is not). Rounds alternate
the order of the servers, so drift on a shared machine hits them alike;
the table gives the median µs per message and its ratio to smtp-sink's
(smtp-sink does not take BDAT: BDAT rows are compared with its DATA).
The machine column is the whole machine's busy CPU per message over the
same load (/proc/stat): the load generator's share is the same for every
server, and it also counts work the kernel does outside the server's
threads (a flush from a kernel workqueue, interrupts), which the server
column cannot see: compare variants on both.
/proc counts in clock ticks (10 ms): keep --messages large enough that a
cell takes seconds of CPU.

With --syscalls, one more run per sluice cell is made under `strace -c -f`
(slow: only its counts are used): system calls per message, the
io_uring_enter calls (a park or a submission), and membarrier (glommio's
park on a multi-core executor set; each one interrupts the other cores);
and one under `strace -e trace=io_uring_enter` for the parks (the calls
that wait for a completion).

  benches/cpu.py                     # 1k and 64k, DATA and BDAT, 3 rounds
  benches/cpu.py --sizes 1k --rounds 5 --syscalls
  benches/cpu.py --variant base=/tmp/base/sluice --variant new=target/release/sluice \
      --configs fsync:2 --sizes 1k --modes data --no-sink --rounds 8   # A/B

Bounded: each load is --messages messages with a 10 minute cap; only
loopback is used.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import LOADGEN, SLUICE, free_port, stop_process, wait_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy():
    """Busy CPU seconds of the whole machine so far (/proc/stat: user,
    nice, system, irq, softirq; not idle, iowait or steal): it also counts
    kernel workers and interrupts that no process is charged for."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / TICK


class Server:
    def __init__(self, name, argv, workdir, spool=None):
        self.name, self.argv, self.workdir, self.spool = name, argv, workdir, spool
        self.proc = None

    def start(self, port):
        if self.spool:
            shutil.rmtree(self.spool, ignore_errors=True)
        argv = [a.replace("{port}", str(port)) for a in self.argv]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)

    def stop(self):
        stop_process(self.proc)
        if self.spool:
            shutil.rmtree(self.spool, ignore_errors=True)


def servers(workdir, sink, variants, configs):
    spool = os.path.join(workdir, "spool")
    out = []
    for cores, durability in configs:
        for name, binary in variants:
            out.append(Server(
                f"{name} {durability} {cores}c",
                [binary, "serve", "-q", "--listen", "127.0.0.1:{port}", "--spool", spool,
                 "--cores", cores, "--durability", durability, "--max-message-size", "64M"],
                workdir, spool))
    if sink:
        out.append(Server("smtp-sink", [sink, "-u", "nobody", "-m", "1000",
                                        "inet:127.0.0.1:{port}", "1024"], workdir))
    return out


def load(port, size, mode, sessions, messages):
    args = [LOADGEN, "--target", f"127.0.0.1:{port}", "--connections", str(sessions),
            "--size", size, "--mode", mode, "--messages", str(messages), "--json", "--quiet",
            "--max-time", "10m", "--max-error-rate", "1"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=660)
    if out.returncode != 0:
        print(f"cpu: load failed ({out.returncode}): {out.stderr.strip()[-300:]}", file=sys.stderr)
        return {"acknowledged": 0, "errors": 1, "messages_per_s": 0}
    return json.loads(out.stdout)


def measure(server, size, mode, args):
    port = free_port()
    server.start(port)
    try:
        before, busy_before = cpu_seconds(server.proc.pid), machine_busy()
        r = load(port, size, mode, args.sessions, args.messages)
        after, busy_after = cpu_seconds(server.proc.pid), machine_busy()
    finally:
        server.stop()
    ok = r["acknowledged"]
    if r["errors"] or ok == 0:
        return None
    return {"us": (after - before) * 1e6 / ok, "rate": r["messages_per_s"],
            "machine_us": (busy_after - busy_before) * 1e6 / ok}


def traced(server, size, mode, args, strace_args, name):
    """One run (a quarter of --messages) under strace with `strace_args`,
    its output in `name` in the work directory: (that path, the load's
    result)."""
    port = free_port()
    server.start(port)
    out = os.path.join(server.workdir, name)
    tracer = subprocess.Popen(["strace", "-f", *strace_args, "-o", out, "-p", str(server.proc.pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    try:
        r = load(port, size, mode, args.sessions, args.messages // 4)
    finally:
        tracer.terminate()
        tracer.wait(30)
        server.stop()
    return out, r


def syscalls(server, size, mode, args):
    """Counts under strace -c -f for one run: {name: calls} per message."""
    summary, r = traced(server, size, mode, args, ["-c"], "strace.txt")
    counts = {}
    with open(summary) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                name = parts[-1]
                calls = int(parts[3]) if parts[3].isdigit() else 0
                counts[name] = calls
    n = max(1, r["acknowledged"])
    out = {k: v / n for k, v in counts.items()}
    out["parks"] = parks(server, size, mode, args)
    return out


def parks(server, size, mode, args):
    """Executor parks per message, from one more traced run: a park is an
    io_uring_enter that waits for a completion (min_complete > 0, glommio's
    sleep); the others only submit."""
    trace, r = traced(server, size, mode, args, ["-e", "trace=io_uring_enter"], "enter.txt")
    waits = 0
    with open(trace) as f:
        for line in f:
            # pid io_uring_enter(fd, to_submit, min_complete, flags, ...
            head = line.partition("io_uring_enter(")[2].split(",")
            if len(head) >= 3 and head[2].strip().isdigit() and int(head[2]) > 0:
                waits += 1
    return waits / max(1, r["acknowledged"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1k,64k")
    ap.add_argument("--modes", default="data,bdat")
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--syscalls", action="store_true")
    ap.add_argument("--configs", default="fsync:1,none:1,fsync:2,none:2",
                    help="DURABILITY:CORES pairs to run sluice with")
    ap.add_argument("--variant", action="append", metavar="NAME=PATH",
                    help="A/B: sluice binaries to compare (default: sluice=target/release/sluice)")
    ap.add_argument("--no-sink", action="store_true", help="leave smtp-sink out")
    args = ap.parse_args()
    variants = [tuple(v.split("=", 1)) for v in args.variant] if args.variant else [("sluice", SLUICE)]
    configs = [tuple(reversed(c.split(":"))) for c in args.configs.split(",")]
    for binary in [b for _, b in variants] + [LOADGEN]:
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"cpu: {binary} is missing: cargo build --release --workspace")
    sink = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)
    if args.no_sink:
        sink = None
    elif not sink:
        print("cpu: smtp-sink is not installed (apt-get install postfix); sluice only", file=sys.stderr)
    with tempfile.TemporaryDirectory() as workdir:
        grid = servers(workdir, sink, variants, configs)
        results = {}
        for size in args.sizes.split(","):
            for mode in args.modes.split(","):
                for rnd in range(args.rounds):
                    order = grid if rnd % 2 == 0 else list(reversed(grid))
                    for server in order:
                        if server.name == "smtp-sink" and mode == "bdat":
                            continue  # it does not take BDAT (its DATA is the reference)
                        m = measure(server, size, mode, args)
                        results.setdefault((size, mode, server.name), []).append(m)
                        shown = "errors" if m is None else (
                            f"{m['us']:.1f} µs/msg, machine {m['machine_us']:.1f}, "
                            f"{m['rate']:,.0f} msg/s")
                        print(f"round {rnd + 1}: {size} {mode} {server.name}: {shown}", file=sys.stderr)
        traced = {}
        if args.syscalls:
            for size in args.sizes.split(","):
                for mode in args.modes.split(","):
                    for server in grid:
                        if server.name != "smtp-sink":
                            traced[(size, mode, server.name)] = syscalls(server, size, mode, args)
    print(f"{args.messages:,} messages × {args.sessions} sessions per cell, {args.rounds} rounds, "
          "server CPU (user + system, all threads) per acknowledged message; machine: "
          "the whole machine's busy CPU per message (load generator, kernel workers and "
          "interrupts included)\n")
    against = "smtp-sink" if sink else f"{variants[0][0]} (same config)"
    print(f"| size | mode | server | µs per message (rounds) | median | vs {against} "
          "| machine µs median | msgs/s median |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for size in args.sizes.split(","):
        for mode in args.modes.split(","):
            sink_runs = [m for m in results.get((size, mode, "smtp-sink"), []) if m]
            versus = ""
            if not sink_runs:
                # smtp-sink does not take BDAT: compare with its DATA.
                sink_runs = [m for m in results.get((size, "data", "smtp-sink"), []) if m]
                versus = " (its DATA)"
            sink_us = statistics.median(m["us"] for m in sink_runs) if sink_runs else None
            first = {}
            for server in grid:
                runs = results.get((size, mode, server.name))
                if runs is None:
                    continue  # not run (smtp-sink and BDAT)
                good = [m for m in runs if m]
                if not good:
                    print(f"| {size} | {mode} | {server.name} | errors (not supported?) | | | | |")
                    continue
                us = statistics.median(m["us"] for m in good)
                rate = statistics.median(m["rate"] for m in good)
                machine = statistics.median(m["machine_us"] for m in good)
                each = ", ".join("err" if m is None else f"{m['us']:.1f}" for m in runs)
                config = server.name.split(" ", 1)[1] if server.name != "smtp-sink" else ""
                first.setdefault(config, us)
                ratio = f"{us / sink_us:.2f}x{versus}" if sink_us else f"{us / first[config]:.2f}x"
                print(f"| {size} | {mode} | {server.name} | {each} | {us:.1f} | {ratio} "
                      f"| {machine:.1f} | {rate:,.0f} |")
    if traced:
        print("\nSystem calls per message under strace -c -f (a slowed run; counts only):\n")
        print("| size | mode | server | all | io_uring_enter | of which parks | membarrier "
              "| sendto | recvfrom |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|")
        for (size, mode, name), c in traced.items():
            total = sum(v for k, v in c.items() if k != "parks")
            print(f"| {size} | {mode} | {name} | {total:.2f} | {c.get('io_uring_enter', 0):.2f} | "
                  f"{c['parks']:.3f} | {c.get('membarrier', 0):.3f} | {c.get('sendto', 0):.2f} | "
                  f"{c.get('recvfrom', 0):.2f} |")


if __name__ == "__main__":
    main()
