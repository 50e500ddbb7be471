#!/usr/bin/env bash
# Instructions per request over `bare`, counted by callgrind: stable on a noisy machine,
# where the interleaved timings of overhead.rs drift. Each case runs alone beside `bare`
# (the overhead bench's case filter), and the count is the difference between that run
# and a run of `bare` alone, divided by the requests the case served.
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

bin=$(cargo bench --bench overhead --no-run --message-format=json \
    ${CALLGRIND_FEATURES:+--features "$CALLGRIND_FEATURES"} 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "overhead" and m.get("executable"):
        print(m["executable"])')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# `total CASES N`: the whole run's instructions, one round of N requests per case after
# the bench's allocation pass (2 x 1000 requests per case).
total() {
  valgrind --tool=callgrind --callgrind-out-file="$tmp/out" "$bin" 1 "$2" "$1" --bench >/dev/null 2>&1
  sed -n 's/^summary: //p; s/^totals: //p' "$tmp/out" | head -n 1
}
# `bare` alone, twice: the difference is 2000 requests of `bare`.
base=$(total none 2000)
bare=$((($(total none 4000) - base) / 2000))
per_case() { echo $((($(total "$1" 2000) - base) / 4000)); }
printf '%-22s %12s %12s\n' case "instr/req" "over bare"
printf '%-22s %12d %12d\n' bare "$bare" 0
for case in "${cases[@]}"; do
  n=$(per_case "$case")
  ref=$bare
  # A stream case runs beside `stream/bare` too: compare it with that.
  if [[ $case == stream/* ]]; then
    both=$((($(total "$case" 2000) - base) / 4000))
    ref=$(per_case stream/bare)
    n=$((both - ref))
  fi
  printf '%-22s %12d %12d\n' "$case" "$n" $((n - ref))
done
