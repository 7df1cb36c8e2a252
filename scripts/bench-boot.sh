#!/usr/bin/env bash
# Benchmark: `banger vm create` → ssh ready on this host (QEMU; TCG when KVM cannot run a
# guest), N runs (default 5), one VM at a time, each deleted afterwards. Prints every run
# and the p50. Runs in a throwaway network namespace; reuses the kernel and image of
# BANGER_HOME (default: the e2e home that scripts/test.sh prepares).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
[ "$(id -u)" -eq 0 ] || { echo "bench-boot: run as root (netns, taps)" >&2; exit 1; }
cargo build --release --bins --locked >&2
build_agent
bin=$(realpath "${CARGO_TARGET_DIR:-target}")/release
src=${BANGER_HOME:-/var/tmp/banger-e2e-home}
BANGER_HOME=$src "$bin/banger" image ensure >&2
BANGER_HOME=$src "$bin/banger" daemon stop >&2
home=$(mktemp -d /tmp/banger-bench.XXXXXX)
mkdir -p "$home/state"
cp "$src/state/state.db" "$home/state/"
export BANGER_HOME=$home
ns=banger-bench-$$
ip netns add "$ns"
cleanup() {
  ip netns exec "$ns" "$bin/banger" daemon stop >/dev/null 2>&1 || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$home"
}
trap cleanup EXIT
ip netns exec "$ns" ip link set lo up
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
