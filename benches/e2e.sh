#!/usr/bin/env bash
# End-to-end requests/s on loopback: axum + hyper, bare vs OtelLayer with nothing
# installed vs OtelLayer with the SDK vs `floor` (the same span and histogram points made
# by the handler itself, no middleware: the SDK's own cost), driven by wrk (-t1 -c16).
# The servers run side by side; each round runs wrk against each in a rotated order, and
# the table gives the median over rounds of each server's requests/s divided by bare's
# in that round.
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

# The CPUs this process may use (a cpuset need not start at 0): wrk on the first, the
# servers on the last. With one CPU, nothing is pinned.
cpus=$(python3 -c 'import os; print(" ".join(map(str, sorted(os.sched_getaffinity(0)))))')
read -r -a cpu_list <<< "$cpus"
if [ ${#cpu_list[@]} -ge 2 ]; then
  wrk_pin=(taskset -c "${cpu_list[0]}")
  server_pin=(taskset -c "${cpu_list[-1]}")
else
  echo "e2e.sh: one CPU only: servers and wrk share it (not pinned)" >&2
  wrk_pin=()
  server_pin=()
fi
declare -A addr
for mode in bare noop sdk floor; do
  # stdin from a fifo held open by `sleep`: the server stops when that ends.
  mkfifo "$tmp/$mode.in"
  (sleep 3600 > "$tmp/$mode.in") & pids+=($!)
  # Every server on the same core: each meets the same placement.
  "${server_pin[@]}" target/release/examples/e2e_server "$mode" < "$tmp/$mode.in" > "$tmp/$mode.out" 2>&1 & pids+=($!)
  for _ in $(seq 100); do grep -q listening "$tmp/$mode.out" 2>/dev/null && break; sleep 0.05; done
  addr[$mode]=$(sed -n 's/listening on //p' "$tmp/$mode.out")
  if [ -z "${addr[$mode]}" ]; then
    echo "e2e.sh: the $mode server did not start:" >&2
    cat "$tmp/$mode.out" >&2
    exit 1
  fi
done

modes=(bare noop sdk floor)
for r in $(seq 0 $((rounds - 1))); do
  for k in "${!modes[@]}"; do
    mode=${modes[$(((k + r) % ${#modes[@]}))]}
    rps=$("${wrk_pin[@]}" wrk -t1 -c16 -d"${secs}s" "http://${addr[$mode]}/users/42" | sed -n 's/^Requests\/sec: *//p')
    echo "$r $mode $rps" >> "$tmp/results"
  done
done

python3 - "$tmp/results" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
by_round = {}
for r, mode, rps in rows:
    by_round.setdefault(r, {})[mode] = float(rps)
print(f"{len(by_round)} rounds, wrk -t1 -c16, medians (q1-q3: quartiles of the per-round ratio)")
print(f"{'server':<8} {'req/s':>10} {'x bare':>8} {'q1-q3':>13}")
for mode in ("bare", "noop", "sdk", "floor"):
    rps = statistics.median(v[mode] for v in by_round.values())
    ratios = sorted(v[mode] / v["bare"] for v in by_round.values())
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
    print(f"{mode:<8} {rps:>10.0f} {statistics.median(ratios):>8.3f} {q1:>6.3f}-{q3:.3f}")
PY
