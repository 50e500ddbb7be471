#!/usr/bin/env bash
# End-to-end requests/s on loopback: axum + hyper, bare vs OtelLayer with nothing
# installed vs OtelLayer with the SDK, driven by wrk (-t1 -c16). The three servers run
# side by side; each round runs wrk against each in a rotated order, and the table gives
# the median over rounds of each server's requests/s divided by bare's in that round.
#
#   bash benches/e2e.sh [ROUNDS] [SECONDS_PER_RUN]
#
# Installs wrk from Debian's packages when it is missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
secs=${2:-3}

if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --quiet --release --example e2e_server ${E2E_FEATURES:+--features "$E2E_FEATURES"}

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

declare -A addr
for mode in bare noop sdk; do
  # stdin from a fifo held open by `sleep`: the server stops when that ends.
  mkfifo "$tmp/$mode.in"
  (sleep 3600 > "$tmp/$mode.in") & pids+=($!)
  target/release/examples/e2e_server "$mode" < "$tmp/$mode.in" > "$tmp/$mode.out" & pids+=($!)
  for _ in $(seq 100); do grep -q listening "$tmp/$mode.out" 2>/dev/null && break; sleep 0.05; done
  addr[$mode]=$(sed -n 's/listening on //p' "$tmp/$mode.out")
done

modes=(bare noop sdk)
for r in $(seq 0 $((rounds - 1))); do
  for k in 0 1 2; do
    mode=${modes[$(((k + r) % 3))]}
    rps=$(wrk -t1 -c16 -d"${secs}s" "http://${addr[$mode]}/users/42" | sed -n 's/^Requests\/sec: *//p')
    echo "$r $mode $rps" >> "$tmp/results"
  done
done

python3 - "$tmp/results" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
by_round = {}
for r, mode, rps in rows:
    by_round.setdefault(r, {})[mode] = float(rps)
print(f"{len(by_round)} rounds, wrk -t1 -c16, medians")
print(f"{'server':<8} {'req/s':>10} {'x bare':>8}")
for mode in ("bare", "noop", "sdk"):
    rps = statistics.median(v[mode] for v in by_round.values())
    ratio = statistics.median(v[mode] / v["bare"] for v in by_round.values())
    print(f"{mode:<8} {rps:>10.0f} {ratio:>8.3f}")
PY
