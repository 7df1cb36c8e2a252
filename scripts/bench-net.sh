#!/usr/bin/env bash
# Networking benchmarks: tap from the warm pool vs a fresh tap (real `ip`, inside a
# throwaway network namespace this script creates and deletes) and the .vm DNS server's
# queries per second on loopback. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench-net: run as root (it creates a network namespace)" >&2; exit 1; }
cargo bench -p banger-daemon --bench dns --locked
cargo bench -p banger-daemon --bench taps --locked --no-run
ns=banger-bench-$$
ip netns add "$ns"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" env BANGER_BENCH_NETNS="$ns" cargo bench -p banger-daemon --bench taps --locked
