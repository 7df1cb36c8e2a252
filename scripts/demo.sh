#!/usr/bin/env bash
# banger's main job on a fresh machine: install what it needs, build banger, then boot a
# sandbox and run a command in it. The VM side runs in a throwaway network namespace (so the
# host's own interfaces, routes and firewall are never touched); the default kernel and image
# are built once (apt + debootstrap from the Debian mirror) into ~/.cache/banger-demo and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it creates a network namespace and taps)" >&2; exit 1; }
ensure_apt build-essential pkg-config git cpio e2fsprogs iproute2 openssh-client \
  qemu-system-x86 qemu-utils busybox-static debootstrap nftables
cargo build --release --bins --locked >&2
build_agent
bin=$(realpath "${CARGO_TARGET_DIR:-target}")/release
export BANGER_HOME=${BANGER_DEMO_HOME:-$HOME/.cache/banger-demo}
echo "demo: banger home $BANGER_HOME" >&2
"$bin/banger" image ensure >&2            # kernel + image, built once (needs the mirror)
"$bin/banger" daemon stop >&2
ns=banger-demo-$$
echo "demo: running in the throwaway network namespace $ns" >&2
ip netns add "$ns"
cleanup() {
  ip netns exec "$ns" "$bin/banger" daemon stop >/dev/null 2>&1 || true
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns exec "$ns" ip link set lo up
set +e
ip netns exec "$ns" "$bin/banger" vm run --rm -- sh -c 'echo "hello from $(hostname): $(uname -sr)"; cat /etc/os-release | head -1'
rc=$?
set -e
echo "demo: the command in the sandbox exited with $rc" >&2
exit "$rc"
