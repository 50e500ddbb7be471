#!/usr/bin/env bash
# Instructions per log line of each case of benches/logs.rs, counted by callgrind: the
# difference between 4000 and 2000 lines, without start-up.
#
#   bash benches/callgrind_logs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null; then
  apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi
bin=$(cargo bench --bench logs --features tracing-json --no-run --message-format=json | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "logs" and m.get("executable"):
        print(m["executable"])')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
count() {
  valgrind --tool=callgrind --callgrind-out-file="$tmp/out" "$bin" "$1" "$2" >/dev/null 2>&1
  sed -n 's/^summary: //p; s/^totals: //p' "$tmp/out" | head -n 1
}
printf '%-18s %12s\n' case "instr/line"
for case in json trace_json trace_json/none; do
  a=$(count "$case" 2000)
  b=$(count "$case" 4000)
  printf '%-18s %12d\n' "$case" $(((b - a) / 2000))
done
