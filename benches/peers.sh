#!/usr/bin/env bash
# One command for the peer comparison table in BENCHMARKS.md:
#
#   benches/peers.sh [--seconds N] [--servers sluice,smtp-sink,postfix]
#                    [--sizes 1k,64k,1m,realistic] [--sessions 1,50]
#
# Installs what it needs (Postfix from Debian, configured to install
# binaries only: no system MTA is started), builds sluice and
# sluice-loadgen in release mode, then runs benches/peers.py, which prints
# a markdown table on stdout and progress on stderr. Loopback only; every
# load is bounded; the default grid takes about 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v smtp-sink >/dev/null && [[ ! -x /usr/sbin/smtp-sink ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "peers: Postfix is missing; install it (apt-get install postfix) or run as root" >&2
    exit 2
  fi
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  echo "postfix postfix/mailname string localhost" | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postfix >/dev/null
fi
export PATH="$PATH:/usr/sbin"
cargo build --release -q -p sluice -p sluice-loadgen
exec python3 benches/peers.py "$@"
