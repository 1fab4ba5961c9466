#!/usr/bin/env bash
# One command for the peer comparison table in BENCHMARKS.md:
#
#   benches/peers.sh [--seconds N] [--servers sluice,smtp-sink,postfix,haraka]
#                    [--sizes 1k,64k,1m,realistic] [--sessions 1,50]
#
# Installs what it needs (Postfix from Debian, configured to install
# binaries only: no system MTA is started; Haraka from npm into target/,
# skipped where npm is missing), builds sluice and
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
if command -v npm >/dev/null && [[ ! -x target/peers-haraka/node_modules/Haraka/bin/haraka ]]; then
  timeout 600 npm install --prefix target/peers-haraka --no-audit --no-fund --silent Haraka >/dev/null \
    || echo "peers: could not install Haraka with npm; it will be skipped" >&2
fi
cargo build --release -q -p sluice -p sluice-loadgen
exec python3 benches/peers.py "$@"
