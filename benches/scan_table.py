#!/usr/bin/env python3
"""Prints the DATA scanner benchmark as a Markdown table of medians.

Why it exists: the scanner's goal is stated as ratios (sluice against the
memmem floor and the naive loop) on each corpus, and criterion prints
each function apart. This reads criterion's saved estimates after
`cargo bench --bench scan` and puts each corpus on one row.

    python3 benches/scan_table.py [--baseline new] [--target target]
"""

import argparse
import json
from pathlib import Path

FUNCTIONS = ("sluice", "memmem-floor", "naive")


def median_bytes_per_s(directory: Path) -> float:
    """Median throughput of one benchmark, in bytes per second."""
    estimates = json.loads((directory / "estimates.json").read_text())
    bench = json.loads((directory / "benchmark.json").read_text())
    nanos = estimates["median"]["point_estimate"]
    return bench["throughput"]["Bytes"] / nanos * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="new", help="criterion baseline name")
    parser.add_argument("--target", default="target", help="cargo target directory")
    args = parser.parse_args()
    root = Path(args.target) / "criterion"
    groups = sorted(root.glob("scan_*"), key=lambda p: p.stat().st_mtime)
    if not groups:
        raise SystemExit(f"no scan results under {root}; run `cargo bench --bench scan` first")
    gib = 1024**3
    print("| corpus | sluice | memmem floor | naive | sluice / floor | sluice / naive |")
    print("|---|---:|---:|---:|---:|---:|")
    for group in groups:
        rates = {}
        for function in FUNCTIONS:
            directory = group / function / args.baseline
            if not directory.is_dir():
                raise SystemExit(f"missing {directory}")
            rates[function] = median_bytes_per_s(directory)
        s, f, n = (rates[k] for k in FUNCTIONS)
        print(
            f"| {group.name.removeprefix('scan_')} | {s / gib:.2f} GiB/s | {f / gib:.2f} GiB/s "
            f"| {n / gib:.2f} GiB/s | {s / f:.0%} | {s / n:.0f}× |"
        )


if __name__ == "__main__":
    main()
