#!/usr/bin/env bash
# Instructions per request in the e2e servers themselves (user space only: the kernel's
# loopback TCP and syscalls are not counted): each `e2e_server MODE` runs under callgrind
# twice, once serving nothing and once under `wrk -t1 -c4` for SECONDS; the difference,
# divided by the requests wrk completed, is the cost of a request without start-up.
#
#   bash benches/e2e_callgrind.sh [SECONDS]     (E2E_FEATURES=... as for e2e.sh)
#
# Installs wrk and valgrind from Debian's packages when missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
for tool in wrk valgrind; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null; }
done
cargo build --quiet --release --example e2e_server ${E2E_FEATURES:+--features "$E2E_FEATURES"}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# `run MODE SECONDS`: prints "INSTRUCTIONS REQUESTS" (SECONDS 0: no requests).
run() {
  local mode=$1 secs=$2 requests=0
  mkfifo "$tmp/in"
  (sleep 120 > "$tmp/in") & local holder=$!
  valgrind --tool=callgrind --callgrind-out-file="$tmp/out" \
    target/release/examples/e2e_server "$mode" < "$tmp/in" > "$tmp/log" 2>&1 &
  local server=$!
  for _ in $(seq 200); do grep -q listening "$tmp/log" 2>/dev/null && break; sleep 0.1; done
  local addr
  addr=$(sed -n 's/listening on //p' "$tmp/log")
  if [ -z "$addr" ]; then
    cat "$tmp/log" >&2
    echo "e2e_callgrind.sh: the $mode server did not start" >&2
    kill "$holder" 2>/dev/null
    return 1
  fi
  if [ "$secs" != 0 ]; then
    requests=$(wrk -t1 -c4 -d"${secs}s" "http://$addr/users/42" | awk '/requests in/ {print $1}')
  fi
  kill "$holder"
  wait "$server"
  rm -f "$tmp/in"
  echo "$(sed -n 's/^summary: //p; s/^totals: //p' "$tmp/out" | head -n 1) $requests"
}

printf '%-8s %10s %12s %12s\n' server requests "instr/req" "over bare"
bare=
for mode in bare noop sdk floor; do
  read -r idle _ <<< "$(run "$mode" 0)"
  read -r busy requests <<< "$(run "$mode" "$secs")"
  per=$(((busy - idle) / requests))
  [ -n "$bare" ] || bare=$per
  printf '%-8s %10d %12d %12d\n' "$mode" "$requests" "$per" $((per - bare))
done
