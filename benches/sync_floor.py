#!/usr/bin/env python3
"""The floor of a durable append on this machine: what one O_DIRECT write
plus one fdatasync costs, with no server around it.

sluice's spool writer, under `--durability fsync`, does this once per
group-commit batch: it writes the batch (O_DIRECT, into blocks the
zeroes ahead already allocated, so a pure overwrite) and syncs it. This
bench does the same pair of calls in a loop, from plain processes (one
per --writers, each on its own file, as each core has its own segment),
and reports what the pair costs:

- the writer processes' own CPU (user + system, from os.times: what
  /proc/PID/stat would charge to a server doing it);
- the whole machine's busy CPU (/proc/stat: user, system, irq, softirq,
  not idle, iowait or steal), which also counts the block layer's
  interrupts and any kernel worker;
- write and sync latency, p50 and p99.

Divide the per-pair CPU by the messages per batch (the server's
`sluice_spool_batch_messages` histogram) to get the share of a durable
message's CPU that the device's write and flush take whoever issues them.

  benches/sync_floor.py                          # 12 KiB batches, 1 and 2 writers
  benches/sync_floor.py --size 12288 --writers 2 --count 20000 --rate 2500

Bounded: --count pairs per writer, and a 5 minute cap. Writes only under
--dir (default: a temporary directory beside the working directory, on
the same file system as a spool there), and removes its files.
"""

import argparse
import mmap
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cpu import machine_busy  # noqa: E402
from soak import percentile  # noqa: E402

PAGE = 4096
CAP_SECONDS = 300


def writer(path, size, count, rate, dsync, out):
    """One writer: prepares its file with zeroes (synced), then `count`
    O_DIRECT writes of `size` octets each followed by fdatasync (or, with
    `dsync`, opened O_DSYNC and no fdatasync)."""
    total = size * count
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        zeroes = bytes(1 << 20)
        for off in range(0, total, len(zeroes)):
            os.pwrite(fd, zeroes[: min(len(zeroes), total - off)], off)
        os.fdatasync(fd)
        os.close(fd)
        fd = os.open(path, os.O_RDWR | os.O_DIRECT | (os.O_DSYNC if dsync else 0))
        buf = mmap.mmap(-1, size)  # page aligned, as O_DIRECT needs
        buf.write(b"x" * size)
        view = memoryview(buf)
        writes, syncs = [], []
        interval = 1.0 / rate if rate else 0.0
        started = time.monotonic()
        cpu0 = os.times()
        next_at = started
        for i in range(count):
            if interval:
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at += interval
            t0 = time.monotonic()
            os.pwrite(fd, view, i * size)
            t1 = time.monotonic()
            if not dsync:
                os.fdatasync(fd)
            t2 = time.monotonic()
            writes.append(t1 - t0)
            syncs.append(t2 - t1)
            if t2 - started > CAP_SECONDS:
                break
        cpu1 = os.times()
        elapsed = time.monotonic() - started
        cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        out.put({"pairs": len(syncs), "cpu": cpu, "elapsed": elapsed,
                 "writes": writes, "syncs": syncs})
    finally:
        os.close(fd)
        os.unlink(path)


def run(directory, size, writers, count, rate, dsync):
    out = multiprocessing.Queue()
    busy0 = machine_busy()
    procs = [multiprocessing.Process(
        target=writer, args=(os.path.join(directory, f"floor-{k}"), size, count, rate, dsync, out))
        for k in range(writers)]
    for p in procs:
        p.start()
    results = [out.get(timeout=CAP_SECONDS + 120) for _ in procs]
    busy1 = machine_busy()
    for p in procs:
        p.join()
    pairs = sum(r["pairs"] for r in results)
    elapsed = max(r["elapsed"] for r in results)
    writes = [w for r in results for w in r["writes"]]
    syncs = [s for r in results for s in r["syncs"]]
    return {
        "pairs": pairs,
        "pairs_per_s": pairs / elapsed,
        "process_us": sum(r["cpu"] for r in results) * 1e6 / pairs,
        # Includes the preparation (zero fill) and this script's start:
        # an upper bound, close for long runs.
        "machine_us": (busy1 - busy0) * 1e6 / pairs,
        "write_p50_ms": percentile(writes, 50) * 1e3,
        "sync_p50_ms": percentile(syncs, 50) * 1e3,
        "sync_p99_ms": percentile(syncs, 99) * 1e3,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", help="where the files go (default: a temporary directory here)")
    parser.add_argument("--size", type=int, default=3 * PAGE,
                        help="octets per write, a multiple of 4096 (default 12288)")
    parser.add_argument("--writers", default="1,2", help="writer counts to run (default 1,2)")
    parser.add_argument("--count", type=int, default=20000, help="pairs per writer")
    parser.add_argument("--rate", type=float, default=0,
                        help="pairs per second per writer (default: as fast as it goes)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dsync", action="store_true",
                        help="open O_DSYNC and skip the fdatasync (the flush then runs "
                             "where the kernel puts it: see the machine column)")
    args = parser.parse_args()
    if args.size <= 0 or args.size % PAGE:
        sys.exit("sync_floor: --size must be a positive multiple of 4096")
    with tempfile.TemporaryDirectory(prefix="sync-floor-", dir=args.dir or ".") as directory:
        print(f"{args.size} octets per write{' (O_DSYNC)' if args.dsync else ' + fdatasync'}, "
              f"{args.count} per writer, rate {args.rate or 'unbounded'}; "
              f"medians of {args.rounds} rounds")
        print(f"{'writers':>7} {'pairs/s':>9} {'process µs':>11} {'machine µs':>11} "
              f"{'write p50':>10} {'sync p50':>9} {'sync p99':>9}")
        for writers in [int(w) for w in args.writers.split(",")]:
            rounds = [run(directory, args.size, writers, args.count, args.rate, args.dsync)
                      for _ in range(args.rounds)]

            def med(key):
                return statistics.median(r[key] for r in rounds)
            print(f"{writers:>7} {med('pairs_per_s'):>9.0f} {med('process_us'):>11.1f} "
                  f"{med('machine_us'):>11.1f} {med('write_p50_ms'):>8.3f}ms "
                  f"{med('sync_p50_ms'):>7.3f}ms {med('sync_p99_ms'):>7.3f}ms")


if __name__ == "__main__":
    main()
