#!/usr/bin/env bash
# Benchmark: `banger vm create` → ssh ready on this host (QEMU; TCG when KVM cannot run a
# guest), N runs (default 5), one VM at a time, each deleted afterwards. Prints every run
# and the p50. Runs in a throwaway network namespace; reuses the kernel and image of
# BANGER_HOME (default: the e2e home that scripts/test.sh prepares).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
runs=${1:-5}
bench_env
times=()
for i in $(seq "$runs"); do
  out=$(ip netns exec "$ns" "$bin/banger" vm create --name "bench-$i" 2>&1 >/dev/null)
  t=$(printf '%s\n' "$out" | sed -n 's/.* ready in \([0-9.]*\)s$/\1/p')
  [ -n "$t" ] || { printf '%s\n' "$out" >&2; exit 1; }
  echo "run $i: create -> ssh ready ${t}s" >&2
  times+=("$t")
  ip netns exec "$ns" "$bin/banger" vm delete "bench-$i" >/dev/null 2>&1
done
p50=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "create -> ssh ready: p50 ${p50}s over $runs runs ($(printf '%s ' "${times[@]}"))"
