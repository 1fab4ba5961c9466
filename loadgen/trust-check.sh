#!/usr/bin/env bash
# Trust check: sluice-loadgen and Postfix's smtp-source, side by side, each
# against Postfix's smtp-sink on loopback, same sessions and message size.
# Prints each tool's messages/s, its own CPU time (user+sys seconds: less
# sensitive than wall time to a noisy shared host), and the message count
# smtp-sink saw.
#
#   loadgen/trust-check.sh [MESSAGES] [SESSIONS] [ROUNDS]
#
# Needs smtp-sink and smtp-source (Debian: apt-get install postfix; with
# "No configuration" it starts nothing). Bounded: every run has a timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${1:-50000} SESSIONS=${2:-50} ROUNDS=${3:-3}
PORT=${PORT:-2699}
SINK=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)
[[ -x $SINK && -x $SOURCE ]] || { echo "needs postfix's smtp-sink and smtp-source (apt-get install postfix)" >&2; exit 2; }
cargo build --release -q -p sluice-loadgen
LOADGEN=target/release/sluice-loadgen
counts=$(mktemp)
trap 'kill $sink_pid 2>/dev/null || true; rm -f "$counts" "$cpu"' EXIT

start_sink() {
  "$SINK" -c -u nobody -m 1000 "inet:127.0.0.1:$PORT" 1024 >"$counts" 2>&1 &
  sink_pid=$!
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return; sleep 0.1; done
  echo "smtp-sink did not start" >&2; exit 1
}
stop_sink() { kill "$sink_pid"; wait "$sink_pid" 2>/dev/null || true; }
sink_messages() { tr '\r' '\n' <"$counts" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1; }

cpu=$(mktemp)
echo "| round | tool | messages | msgs/s | loader CPU s | smtp-sink counted |"
echo "|---|---|---:|---:|---:|---:|"
for r in $(seq "$ROUNDS"); do
  start_sink
  t0=$(date +%s.%N)
  /usr/bin/time -o "$cpu" -f "%U %S" timeout 120 "$SOURCE" -d -s "$SESSIONS" -m "$MESSAGES" \
      -l 1024 -r 1 -M localhost -f from@example.test -t to@example.test "inet:127.0.0.1:$PORT" >/dev/null
  t1=$(date +%s.%N); sleep 0.3
  rate=$(python3 -c "print(f'{$MESSAGES/($t1-$t0):.0f}')")
  echo "| $r | smtp-source | $MESSAGES | $rate | $(awk '{print $1+$2}' "$cpu") | $(sink_messages) |"
  stop_sink

  start_sink
  # Same sessions; --size 1200 covers smtp-source's 1024-octet payload plus
  # its headers; no pipelining, like smtp-source.
  rate=$(/usr/bin/time -o "$cpu" -f "%U %S" timeout 120 "$LOADGEN" --target "127.0.0.1:$PORT" --messages "$MESSAGES" \
      --connections "$SESSIONS" --size 1200 --pipelining off --cores 1 --quiet --json \
      | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f %d" % (r["messages_per_s"], r["sent"]))')
  sleep 0.3
  # smtp-sink also counts the one probe connection's session, not a message.
  echo "| $r | sluice-loadgen | ${rate#* } | ${rate% *} | $(awk '{print $1+$2}' "$cpu") | $(sink_messages) |"
  stop_sink
done
