#!/usr/bin/env bash
# Instructions per request over `bare`, counted by callgrind: repeatable on a noisy
# machine, where the interleaved timings of overhead.rs drift. Each case runs alone beside
# `bare` (the overhead bench's case filter), twice, with 2000 and with 4000 timed requests
# per case: the difference is the marginal cost of 2000 more requests, without start-up,
# the warm-up pass or lazy first-use costs.
#
#   bash benches/callgrind.sh [CASE ...]        (default: the layer cases)
#   CALLGRIND_FEATURES=experimental-bound-instruments bash benches/callgrind.sh layer/sdk
#
# Installs valgrind from Debian's packages when it is missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null; then
  apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(floor layer/sdk layer/traces_only layer/metrics_only layer/sampled_out layer/noop)

build=(cargo bench --bench overhead --no-run --message-format=json ${CALLGRIND_FEATURES:+--features "$CALLGRIND_FEATURES"})
bin=$("${build[@]}" | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "overhead" and m.get("executable"):
        print(m["executable"])')
[ -n "$bin" ] || { echo "callgrind.sh: the overhead bench did not build" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# `delta CASES`: instructions of 2000 more timed requests of every case the filter runs.
delta() {
  local runs=()
  for n in 2000 4000; do
    rm -f "$tmp/out"
    if ! valgrind --tool=callgrind --callgrind-out-file="$tmp/out" "$bin" 1 "$n" "$1" --bench \
      >"$tmp/log" 2>&1; then
      cat "$tmp/log" >&2
      echo "callgrind.sh: the bench failed for '$1'" >&2
      return 1
    fi
    runs+=("$(sed -n 's/^summary: //p; s/^totals: //p' "$tmp/out" | head -n 1)")
  done
  echo $((runs[1] - runs[0]))
}
known() { grep -q "^$1 " "$tmp/log"; }

base=$(delta none)
bare=$((base / 2000))
printf '%-22s %12s %12s\n' case "instr/req" "over bare"
printf '%-22s %12d %12d\n' bare "$bare" 0
declare -A family_bare=()
for case in "${cases[@]}"; do
  d=$(delta "$case")
  known "$case" || { echo "callgrind.sh: no case named '$case'" >&2; exit 1; }
  family=${case%%/*}
  if [[ $family == stream || $family == grpc ]]; then
    # A family's case runs beside the family's own bare (`stream/bare`, `grpc/bare`) too:
    # compare it with that.
    if [ -z "${family_bare[$family]:-}" ]; then
      fb=$(delta "$family/bare")
      family_bare[$family]=$(((fb - base) / 2000))
    fi
    ref=${family_bare[$family]}
    n=$(((d - base) / 2000 - ref))
  else
    n=$(((d - base) / 2000))
    ref=$bare
  fi
  printf '%-22s %12d %12d\n' "$case" "$n" $((n - ref))
done
