#!/usr/bin/env bash
# Benchmark: `banger image pull` of a ~300 MB image (the default Debian tree as a plain-tar
# layer plus a small one) from a local registry (Debian's docker-registry on 127.0.0.1), N
# runs (default 3) cold (layer cache emptied) and N warm (layers cached): manifest, blobs,
# flatten, ext4 build, publish. Prints every run and the p50s. Runs in a throwaway network
# namespace; reuses the kernel and image of BANGER_HOME (default: the e2e home).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
runs=${1:-3}
ensure_apt docker-registry
bench_cleanup_hook() {
  [ -n "${reg_pid:-}" ] && kill "$reg_pid" 2>/dev/null
  ip netns exec "$ns" "$bin/banger" image delete pullbench >/dev/null 2>&1
}
bench_env
cargo build --release --locked -p banger-testkit --bin oci-push >&2
rootfs=$(BANGER_HOME=${BANGER_E2E_HOME:-/var/tmp/banger-e2e-home} "$bin/banger" image show debian-bookworm --json \
  | sed -n 's/.*"rootfs": "\([^"]*\)".*/\1/p')
BANGER_HOME=${BANGER_E2E_HOME:-/var/tmp/banger-e2e-home} "$bin/banger" daemon stop >/dev/null
mkdir -p "$home/tree" "$home/top/etc"
debugfs -R "rdump / $home/tree" "$rootfs" 2>/dev/null
rm -rf "$home/tree/root" && cp -a "$(dirname "$rootfs")/work-seed" "$home/tree/root"
echo bench > "$home/top/etc/banger-bench"
cat > "$home/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $home/registry
http:
  addr: 127.0.0.1:5000
YML
ip netns exec "$ns" /usr/bin/docker-registry serve "$home/registry.yml" >"$home/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 100); do
  ip netns exec "$ns" bash -c 'exec 3<>/dev/tcp/127.0.0.1/5000' 2>/dev/null && break
  sleep 0.1
done
ip netns exec "$ns" "$bin/oci-push" 127.0.0.1:5000 bench/debian:v1 "$home/tree" "$home/top" >/dev/null
echo "image: $(du -sm "$home/tree" | cut -f1) MB in 2 layers" >&2
ip netns exec "$ns" "$bin/banger" kernel list >/dev/null
pull_ms() {
  local t0 t1
  t0=$(date +%s%N)
  ip netns exec "$ns" "$bin/banger" image pull 127.0.0.1:5000/bench/debian:v1 --name pullbench >/dev/null 2>"$home/pull.log"
  [ -z "${BENCH_VERBOSE:-}" ] || cat "$home/pull.log" >&2
  t1=$(date +%s%N)
  ip netns exec "$ns" "$bin/banger" image delete pullbench >/dev/null 2>&1
  echo $(((t1 - t0) / 1000000))
}
p50() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
cold=() warm=()
for i in $(seq "$runs"); do
  ip netns exec "$ns" "$bin/banger" image cache prune --all >/dev/null 2>&1
  t=$(pull_ms); echo "run $i: cold ${t} ms" >&2; cold+=("$t")
done
for i in $(seq "$runs"); do
  t=$(pull_ms); echo "run $i: warm ${t} ms" >&2; warm+=("$t")
done
echo "image pull (~300 MB, local registry): cold p50 $(p50 "${cold[@]}") ms ($(printf '%s ' "${cold[@]}")), warm p50 $(p50 "${warm[@]}") ms ($(printf '%s ' "${warm[@]}"))"
