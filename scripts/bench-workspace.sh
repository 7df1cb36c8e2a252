#!/usr/bin/env bash
# Benchmark: `banger vm workspace prepare` of a repo with 2,000 files / 50 MB (incompressible)
# into a real guest on this host (QEMU; TCG when KVM cannot run a guest), N runs (default 3)
# into one VM. Prints every run and the p50. Runs in a throwaway network namespace; reuses
# the kernel and image of BANGER_HOME (default: the e2e home that scripts/test.sh prepares).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
runs=${1:-3}
bench_cleanup_hook() {
  ip netns exec "$ns" "$bin/banger" vm delete wsbench >/dev/null 2>&1
}
bench_env
repo=$home/repo
mkdir -p "$repo"
for i in $(seq 0 1999); do
  mkdir -p "$repo/d$((i % 40))"
  head -c 26214 /dev/urandom > "$repo/d$((i % 40))/f$i.bin"
done
git -C "$repo" init -q -b main
git -C "$repo" add -A
git -C "$repo" -c user.name=bench -c user.email=bench@example.com commit -qm bench
echo "repo: $(git -C "$repo" ls-files | wc -l) files, $(du -sm --exclude=.git "$repo" | cut -f1) MB" >&2
ip netns exec "$ns" "$bin/banger" vm create --name wsbench --disk-size 4G >/dev/null
times=()
for i in $(seq "$runs"); do
  t=$(ip netns exec "$ns" "$bin/banger" vm workspace prepare wsbench "$repo" --json \
    | sed -n 's/.*"elapsed_ms": \([0-9]*\).*/\1/p')
  [ -n "$t" ] || exit 1
  echo "run $i: prepare ${t} ms" >&2
  times+=("$t")
done
p50=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "workspace prepare (2,000 files / 50 MB, real guest): p50 ${p50} ms over $runs runs ($(printf '%s ' "${times[@]}"))"
