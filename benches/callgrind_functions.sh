#!/usr/bin/env bash
# Where a case's instructions go: per function, the marginal instructions per request of
# CASE minus those of `bare` (callgrind self cost, 4000 minus 2000 requests, as
# callgrind.sh counts them). Run it in two checkouts and compare the two lists to see
# which functions a change made dearer.
#
#   bash benches/callgrind_functions.sh CASE [TOP]      (default: the 30 largest)
#   CALLGRIND_FEATURES=experimental-bound-instruments bash benches/callgrind_functions.sh layer/metrics_only
set -euo pipefail
cd "$(dirname "$0")/.."
case=${1:?usage: callgrind_functions.sh CASE [TOP]}
top=${2:-30}
if ! command -v valgrind >/dev/null; then
  apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi
build=(cargo bench --bench overhead --no-run --message-format=json ${CALLGRIND_FEATURES:+--features "$CALLGRIND_FEATURES"})
bin=$("${build[@]}" | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "overhead" and m.get("executable"):
        print(m["executable"])')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# `none` runs `bare` alone; CASE runs beside `bare`.
for c in none "$case"; do
  for n in 2000 4000; do
    valgrind --tool=callgrind --callgrind-out-file="$tmp/out" "$bin" 1 "$n" "$c" --bench >/dev/null 2>&1
    callgrind_annotate --inclusive=no --threshold=100 "$tmp/out" >"$tmp/${c//\//_}.$n" 2>/dev/null
  done
done
python3 - "$tmp" "${case//\//_}" "$top" <<'PY'
import re, sys
tmp, case, top = sys.argv[1], sys.argv[2], int(sys.argv[3])
def load(path):
    d = {}
    for line in open(path):
        m = re.match(r'\s*([\d,]+) \([^)]*\)\s+(\S.*)$', line)
        if m:
            name = re.sub(r' \[.*\]$', '', m.group(2))
            d[name] = d.get(name, 0) + int(m.group(1).replace(',', ''))
    return d
def per_request(c):
    a, b = load(f'{tmp}/{c}.2000'), load(f'{tmp}/{c}.4000')
    return {k: (b.get(k, 0) - a.get(k, 0)) / 2000 for k in set(a) | set(b)}
bare, both = per_request('none'), per_request(case)
# `both` ran bare and the case: the case alone over bare is both - 2 * bare.
over = {k: both.get(k, 0) - 2 * bare.get(k, 0) for k in set(both) | set(bare)}
for v, k in sorted(((v, k) for k, v in over.items() if abs(v) >= 1), reverse=True)[:top]:
    print(f'{v:9.1f}  {k[:140]}')
PY
